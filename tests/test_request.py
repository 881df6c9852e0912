"""One request, one road (`rag.answer.request.AskRequest`, `rag.chat.Conversation.respond`): the same
question with the same settings gives the same answer through ``rag ask --json``, a running
``rag api`` (the official ``openai`` client) and ``rag mcp`` (the official ``mcp`` client), over
the bundled index with the extractive backend (no model). Limits and defaults come from the
settings in every interface (``RAG_RETRIEVAL__MAX_K``, ``RAG_RETRIEVAL__K``), and an unknown
model is the same error from the web chat and the API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from rag.answer.request import AskRequest
from rag.errors import InputError, RagError, TooLargeError, UnknownModelError
from rag.settings import Settings
from rag.testing import HashEmbedder
from tests.conftest import BIN, run_cli
from tests.test_api import client, server_env, start_api
from ui.service import ChatMessage, PaperService
from ui.shared import AnswererPool

QUESTIONS = ["How many parameters does Skywork-MoE have?", "Which techniques improve mixture-of-experts training?"]
K = [None, 2]  # the answer step's default depth, and one every interface must pass on
SEARCH_K = "3"  # RAG_RETRIEVAL__K for the servers and the CLI: search_papers must follow it


def same_fields(answer: dict[str, Any], threshold: float) -> dict[str, Any]:
    """What must not differ between interfaces, from ``rag ask --json`` (an `Answer.as_dict`) or the
    API's / MCP's answer object (`rag.render.json.answer_summary`)."""
    if "sentences" in answer:  # the CLI's: support flags as the API has them (`rag.render.view.citation_supported`)
        unsupported = [s["text"] for s in answer["sentences"] if s["claim"] and not s["supported"]]
        for c in answer["citations"]:
            c["supported"] = bool(c["evidence"]) and all(e["score"] >= threshold for e in c["evidence"])
    else:
        unsupported = answer["unsupported_sentences"]
    return {
        "answer": answer["answer"], "abstained": answer["abstained"], "query": answer["query"],
        "backend": answer["backend"], "unsupported": unsupported,
        "citations": [(c["number"], c["paper_id"], c["supported"],
                       [(e["sentence"], round(e["score"], 4)) for e in c["evidence"]]) for c in answer["citations"]],
        "also_retrieved": [(c["number"], c["paper_id"]) for c in answer["also_retrieved"]],
    }


def by_mcp(env: dict[str, str]) -> tuple[list[dict[str, Any]], int]:
    """(the ask tool's answers to QUESTIONS x K, the number of papers search_papers gives without k)."""
    keep = {k: env[k] for k in env if k.startswith(("RAG_", "HF_", "XDG_", "PYTHONPATH", "PATH", "HOME"))}
    answers: list[dict[str, Any]] = []
    found: list[int] = []

    async def main() -> None:
        async with Client(StdioServerParameters(command=str(BIN / "rag"), args=["mcp"], env=keep),
                          read_timeout_seconds=120) as mcp:
            for question in QUESTIONS:
                for k in K:
                    result = await mcp.call_tool("ask", {"question": question, **({"k": k} if k else {})})
                    assert not result.is_error, result.content
                    answers.append(result.structured_content)
            searched = await mcp.call_tool("search_papers", {"query": "mixture of experts"})
            found.append(len(searched.structured_content["results"]))

    anyio.run(main)
    return answers, found[0]


def test_the_cli_the_api_and_mcp_give_the_same_answer(bundled_home: Path) -> None:
    env = server_env(bundled_home, RAG_RETRIEVAL__K=SEARCH_K)
    threshold = Settings().answer.support_threshold
    cli = []
    for question in QUESTIONS:
        for k in K:
            result = run_cli("ask", question, "--json", *(["-k", str(k)] if k else []), env=env)
            assert result.returncode == 0, result.stderr
            cli.append(json.loads(result.stdout))
    searched = run_cli("search", "mixture of experts", "--json", env=env)
    assert len(json.loads(searched.stdout)) == int(SEARCH_K)

    url, server = start_api(bundled_home, RAG_RETRIEVAL__K=SEARCH_K)
    with server:
        api = []
        for question in QUESTIONS:
            for k in K:
                reply = client(url).chat.completions.create(
                    model="paper-rag", messages=[{"role": "user", "content": question}],
                    extra_body={"k": k} if k else None)
                api.append({**reply.model_extra["paper_rag"], "citations": reply.model_extra["citations"]})
        assert len(httpx.post(f"{url}/v1/search", json={"query": "mixture of experts"}).json()["results"]) == 3

    mcp, mcp_found = by_mcp(env)
    assert mcp_found == int(SEARCH_K)  # was 5 whatever RAG_RETRIEVAL__K said

    for i, (a, b, c) in enumerate(zip(cli, api, mcp)):
        assert a["backend"] == "extractive" and a["citations"], a
        assert same_fields(a, threshold) == same_fields(b, threshold) == same_fields(c, threshold), (QUESTIONS[i // 2],
                                                                                                    K[i % 2])
    # k reached the answer step everywhere: two papers retrieved, so at most one of them not cited
    assert all(len(x["citations"]) + len(x["also_retrieved"]) <= 2 for x in cli[1::2])
    assert cli[0]["also_retrieved"] != cli[1]["also_retrieved"]


# ------------------------------------------------------------------ limits from the settings, checked once


def test_k_limit_and_defaults_come_from_the_settings() -> None:
    settings = Settings(retrieval={"k": 3, "max_k": 7})
    assert AskRequest.of(settings, "what?", k=7).k == 7
    with pytest.raises(InputError) as info:
        AskRequest.of(settings, "what?", k=8, params={"k": "-k"})
    assert info.value.param == "-k" and "1 to 7" in info.value.fix
    with pytest.raises(Exception, match="above max_k"):
        Settings(retrieval={"k": 9, "max_k": 7})
    with pytest.raises(InputError, match="less than or equal to 2") as bad:
        AskRequest.of(settings, "what?", temperature=2.5)  # llm.temperature's own bound
    assert bad.value.param == "temperature"


def test_the_question_is_cleaned_once_with_its_param() -> None:
    request = AskRequest.of(Settings(), "  What\tdoes \x00 ZQRT do? ")
    assert request.question == "What does ZQRT do?"
    with pytest.raises(TooLargeError) as info:
        AskRequest.of(Settings(), "why " * 1000, params={"question": "messages.0.content"})
    assert info.value.param == "messages.0.content"
    with pytest.raises(InputError, match="empty"):
        AskRequest.of(Settings(), "\u200b ")


def test_cli_refuses_k_over_the_settings_limit() -> None:
    result = run_cli("ask", "What is ZQRT?", "-k", "8", "--json", env={"RAG_RETRIEVAL__MAX_K": "7"}, timeout=120)
    assert result.returncode == 2 and "-k=8 is out of range" in result.stderr and "Traceback" not in result.stderr


class RecordingPool(AnswererPool):
    """An `AnswererPool` that keeps every model refusal it raises."""

    refused: list[RagError]

    def check(self, model: str, backend: str | None = None, fix: str = "") -> None:
        try:
            super().check(model, backend, fix)
        except RagError as err:
            self.refused.append(err)
            raise


def test_an_unknown_model_is_the_same_error_from_the_web_chat_and_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    import gradio as gr

    from ui.app import WebApp

    settings = Settings(llm={"backend": "extractive"})
    pool = RecordingPool(settings, embedder=HashEmbedder(settings.embedding))
    pool.refused = []
    warnings: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda text, *a, **k: warnings.append(text))
    list(WebApp(settings, pool=pool).ask("What is ZQRT?", None, "llamacpp", "qwen9-secret"))
    with pytest.raises(UnknownModelError):
        PaperService(settings, pool=pool).request([ChatMessage("user", "What is ZQRT?")], "llamacpp/qwen9-secret")
    assert [type(err) for err in pool.refused] == [UnknownModelError, UnknownModelError]
    assert all(err.param == "model" for err in pool.refused) and "not served here" in warnings[0]

