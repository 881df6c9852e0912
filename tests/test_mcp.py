"""The MCP server (`ui.mcp_server`) through the official client of the ``mcp`` SDK: spawning
``rag mcp`` over stdio, and against ``rag mcp --transport http`` over streamable HTTP (with a
token). Lists the tools, calls each one, checks the structured results and the errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import BIN, free_port, run_cli, running_server
from tests.test_api import SKYWORK_ID, SKYWORK_Q, TOKEN, server_env

SKYWORK_TITLE = "Skywork-MoE: A Deep Dive into Training Techniques for Mixture-of-Experts Language Models"
TOOLS = {"search_papers", "ask", "get_paper", "similar_papers", "export_bibtex", "compare_papers"}


def run(check: Callable[[Client], Awaitable[None]], server: Any) -> None:
    async def main() -> None:
        async with Client(server, read_timeout_seconds=120) as client:
            await check(client)

    anyio.run(main)


async def exercise(client: Client) -> None:
    """Every tool and the resource, with their structured results."""
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    assert all(t.output_schema and t.annotations and t.annotations.read_only_hint for t in tools.values())

    found = await client.call_tool("search_papers", {"query": "Skywork-MoE experts", "k": 2})
    assert not found.is_error
    assert [r["paper_id"] for r in found.structured_content["results"]][:1] == [SKYWORK_ID]
    assert len(found.structured_content["results"]) == 2 and SKYWORK_ID in found.content[0].text
    empty = await client.call_tool("search_papers", {"query": "Skywork", "year": "1990"})
    assert empty.structured_content["results"] == [] and "No papers" in empty.content[0].text

    answered = await client.call_tool("ask", {"question": SKYWORK_Q})
    data = answered.structured_content
    assert not answered.is_error and "146 billion" in data["answer"] and data["backend"] == "extractive"
    assert data["citations"][0]["paper_id"] == SKYWORK_ID and data["citations"][0]["supported"] is True
    assert "**Sources**" in answered.content[0].text
    follow = await client.call_tool("ask", {"question": "Which techniques does it introduce?", "history": [
        {"role": "user", "content": SKYWORK_Q}, {"role": "assistant", "content": answered.content[0].text}]})
    assert "Skywork-MoE" in follow.structured_content["query"]
    assert follow.structured_content["citations"][0]["number"] == 1

    paper = await client.call_tool("get_paper", {"id": SKYWORK_ID})
    assert paper.structured_content["id"] == SKYWORK_ID and "146 billion" in paper.structured_content["abstract"]
    titled = await client.call_tool("get_paper", {"id": SKYWORK_TITLE.lower()})  # a title names a paper too
    assert not titled.is_error and titled.structured_content["id"] == SKYWORK_ID
    bib = await client.call_tool("export_bibtex", {"ids": [SKYWORK_ID]})
    assert bib.structured_content["ids"] == [SKYWORK_ID] and bib.structured_content["bibtex"].startswith("@")

    near = await client.call_tool("similar_papers", {"id": SKYWORK_ID, "k": 3})
    assert not near.is_error and near.structured_content["paper_id"] == SKYWORK_ID
    ids = [r["paper_id"] for r in near.structured_content["results"]]
    assert len(ids) == 3 and SKYWORK_ID not in ids and ids[0] in near.content[0].text

    compared = await client.call_tool("compare_papers", {"papers": [SKYWORK_ID], "columns": ["code", "task"]})
    assert not compared.is_error and compared.structured_content["columns"] == ["code", "task"]
    assert compared.structured_content["rows"][0]["paper_id"] == SKYWORK_ID
    assert "| # | Paper |" in compared.content[0].text

    resource = await client.read_resource(f"paper://{SKYWORK_ID}")
    assert resource.contents[0].text.startswith("# Skywork-MoE")
    templates = (await client.list_resource_templates()).resource_templates
    assert [t.uri_template for t in templates] == ["paper://{+paper_id}"]

    for name, args, needle in [("get_paper", {"id": "title:0000000000000000"}, "no paper with id"),
                               ("export_bibtex", {"ids": [SKYWORK_ID, "nope"]}, "no paper with id 'nope'"),
                               ("similar_papers", {"id": "nope"}, "no paper with id 'nope'"),
                               ("ask", {"question": "   "}, "question is empty"),
                               ("ask", {"question": "x" * 3000}, "characters long"),
                               ("search_papers", {"query": "x", "k": 0}, "k"),
                               ("search_papers", {"query": "x", "year": "soon"}, "year"),
                               ("search_papers", {"query": "x", "year": "2025..2020"}, "2020..2025"),
                               ("similar_papers", {"id": SKYWORK_ID, "year": "2025..2020"}, "runs backwards")]:
        failed = await client.call_tool(name, args)
        assert failed.is_error and needle in failed.content[0].text, (name, failed.content)
        assert "Traceback" not in failed.content[0].text
    with pytest.raises(MCPError, match="no paper with id"):
        await client.read_resource("paper://nope")


def test_stdio(bundled_home: Path) -> None:
    env = server_env(bundled_home)
    keep = {k: env[k] for k in env if k.startswith(("RAG_", "HF_", "XDG_", "PYTHONPATH"))}
    run(exercise, StdioServerParameters(command=str(BIN / "rag"), args=["mcp"], env=keep))


@pytest.fixture(scope="module")
def mcp_http(bundled_home: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "rag"), "mcp", "--transport", "http", "--port", str(port)]
    with running_server(cmd, url + "/health", timeout=120, env=server_env(bundled_home, RAG_API__TOKEN=TOKEN)):
        yield url + "/mcp"


def test_streamable_http_with_a_token(mcp_http: str) -> None:
    authorised = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
    run(exercise, streamable_http_client(mcp_http, http_client=authorised))
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.post(mcp_http, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_http_refuses_a_public_address_without_a_token() -> None:
    result = run_cli("mcp", "--transport", "http", "--host", "0.0.0.0", "--port", str(free_port()), timeout=60)
    assert result.returncode == 2 and "RAG_API__TOKEN" in result.stderr
    assert run_cli("mcp", "--transport", "smoke-signals", timeout=60).returncode == 2
