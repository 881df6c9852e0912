"""One error tree, one table (`rag.errors.outcome`): every error class has its outcome, and a missing
paper is reported the same way through the CLI, every API route that takes a paper id and the MCP
tools and resource; ``param`` is a real field that reaches the OpenAI error object.

The interfaces run for real: ``rag`` in a subprocess, the API app in process (and the official
``openai`` client over it), the MCP server through the official ``mcp`` client.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest
from fastapi.testclient import TestClient
from mcp import Client
from mcp.shared.exceptions import MCPError

from rag import errors
from rag.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    InputError,
    PaperNotFoundError,
    RagError,
    TooLargeError,
    outcome,
)
from rag.settings import Settings
from tests.conftest import run_cli
from ui.api import create_app, from_rag_error
from ui.mcp_server import build_server
from ui.service import PaperService

# every class in rag.errors -> (CLI exit status, HTTP status, OpenAI error code, MCP JSON-RPC code);
# a new class fails test_every_error_class_has_its_outcome until it is listed here
NOT_FOUND = (2, 404, "not_found", INVALID_PARAMS)
BAD_INPUT = (2, 400, "invalid_request", INVALID_PARAMS)
UNAVAILABLE = (2, 503, "backend_unavailable", INTERNAL_ERROR)
EXPECTED: dict[str, tuple[int, int, str, int]] = {
    "RagError": (2, 500, "internal_error", INTERNAL_ERROR),
    "InputError": BAD_INPUT, "CorpusError": BAD_INPUT, "RecordError": BAD_INPUT,
    "NotFoundError": NOT_FOUND, "PaperNotFoundError": NOT_FOUND,
    "UnknownModelError": (2, 404, "model_not_found", INVALID_PARAMS),
    "TooLargeError": (2, 413, "request_too_large", INVALID_PARAMS),
    "BusyError": (2, 429, "rate_limit_exceeded", INTERNAL_ERROR),
    "StoreError": UNAVAILABLE, "EmptyIndexError": UNAVAILABLE, "EmbedderMismatchError": UNAVAILABLE,
    "IndexDamagedError": UNAVAILABLE, "IndexBusyError": UNAVAILABLE, "LockedError": UNAVAILABLE,
    "ChromaUnavailableError": UNAVAILABLE, "BackendError": UNAVAILABLE, "BackendUnavailableError": UNAVAILABLE,
}
PAPERS = [{"title": "Zephyr Graphs for Retrieval", "abstract": "Zephyr graphs index abstracts for retrieval.",
           "arxiv_id": "2406.06563", "year": 2024},
          {"title": "Quokka Counting on Islands", "abstract": "Quokka populations were counted on an island.",
           "doi": "10.1234/quokka", "year": 2019},
          {"title": "Wombat Burrows and Soil", "abstract": "Wombat burrows change the soil they are dug in.",
           "doi": "10.1234/wombat", "year": 2021}]
ZEPHYR, WOMBAT = "arxiv:2406.06563", "doi:10.1234/wombat"


def test_every_error_class_has_its_outcome() -> None:
    classes = {name: cls for name, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, RagError) and cls.__module__ == errors.__name__}
    assert set(classes) == set(EXPECTED), "list the new error class in EXPECTED, with its outcome"
    for name, cls in classes.items():
        row = outcome(cls)
        assert (row.exit_code, row.status, row.code, row.mcp_code) == EXPECTED[name], name
    assert outcome(errors.BusyError).retry_after == 1 and outcome(InputError).retry_after is None


def test_param_is_a_field_and_reaches_the_openai_error_object() -> None:
    err = InputError("k=0 is out of range", "ask for 1 to 100 papers", param="k")
    assert err.param == "k" and RagError("x").param is None and err.user_message().endswith("1 to 100 papers")
    body = from_rag_error(err).body()["error"]
    assert body == {"message": "k=0 is out of range (fix: ask for 1 to 100 papers)", "type": "invalid_request_error",
                    "param": "k", "code": "invalid_request"}
    too_long = from_rag_error(TooLargeError("long", param="messages.0.content"))
    assert (too_long.status, too_long.param) == (413, "messages.0.content")


def test_a_missing_paper_is_404_wherever_it_is_raised() -> None:
    """A `PaperNotFoundError` from the library (not only from the service's own lookup) is a 404."""
    missing = from_rag_error(PaperNotFoundError("the paper 'x' has no stored vectors"))
    assert (missing.status, missing.code) == (404, "not_found")


@pytest.fixture
def small_home(rag_home: Path, embedder, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    """Three papers; the last one's vectors are gone from Chroma (its record is still in the catalogue)."""
    from rag.index.store import Store
    from rag.ingest.ingestor import Ingestor

    path = tmp_path / "papers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PAPERS), encoding="utf-8")
    settings = Settings(home=rag_home, llm={"backend": "extractive"})
    Ingestor(settings, embedder=embedder).run([path])
    Store(settings).collection().delete(where={"paper_id": WOMBAT})
    return settings


def test_a_missing_paper_is_the_same_error_through_cli_api_and_mcp(small_home: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    from rag.answer.answerer import Answerer
    from ui.shared import AnswererPool

    row = outcome(PaperNotFoundError)
    env = {"RAG_HOME": str(small_home.home)}
    for args in (("papers", "show", "nosuch"), ("similar", "nosuch"), ("similar", WOMBAT), ("papers", "rm", "nosuch"),
                 ("table", "--paper", "nosuch")):
        done = run_cli(*args, env=env)
        assert done.returncode == row.exit_code and done.stderr.lstrip().startswith("error: "), (args, done.stderr)

    service = PaperService(small_home, pool=AnswererPool(small_home, answerer=Answerer(small_home, embedder=embedder)))
    http = TestClient(create_app(small_home, service=service))
    for method, url, body in [("GET", "/v1/papers/nosuch", None), ("GET", "/v1/papers/nosuch/bibtex", None),
                              ("GET", "/v1/papers/nosuch/similar", None), ("POST", "/v1/table", {"papers": ["nosuch"]}),
                              ("GET", f"/v1/papers/{WOMBAT}/similar", None)]:  # in the catalogue, not in Chroma
        response = http.request(method, url, json=body)
        assert response.status_code == row.status, (url, response.text)
        assert response.json()["error"]["code"] == row.code, url
    assert http.get(f"/v1/papers/{ZEPHYR}/similar").status_code == 200

    bad = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", max_retries=0, http_client=http)
    with pytest.raises(openai.BadRequestError) as info:
        bad.chat.completions.create(model="paper-rag", messages=[{"role": "wizard", "content": "x"}])
    assert info.value.param == "messages.0.role" and info.value.code == "invalid_request"

    async def check() -> None:
        async with Client(build_server(small_home, service)) as client:
            for tool, args in [("get_paper", {"id": "nosuch"}), ("export_bibtex", {"ids": [ZEPHYR, "nosuch"]}),
                               ("similar_papers", {"id": "nosuch"}), ("similar_papers", {"id": WOMBAT}),
                               ("compare_papers", {"papers": ["nosuch"]})]:
                failed = await client.call_tool(tool, args)
                assert failed.is_error and "fix:" in failed.content[0].text, (tool, failed.content)
                error: dict[str, Any] = (failed.structured_content or {})["error"]
                assert error["code"] == row.code and error["type"] == row.type, (tool, error)
            year = await client.call_tool("search_papers", {"query": "wombat", "year": "soon"})
            assert year.is_error and (year.structured_content or {})["error"]["param"] == "year"
            with pytest.raises(MCPError) as read:
                await client.read_resource("paper://nosuch")
            assert read.value.code == row.mcp_code and read.value.data["code"] == row.code

    anyio.run(check)
