"""The OpenAI-compatible API (`ui.api`) with real clients: the official ``openai`` client and raw
HTTP against a running ``rag api`` process over the bundled index (extractive backend), plus
in-process tests with `rag.testing.ScriptedBackend` where a test needs a blocked or failing model.

Every error is checked to be an OpenAI error object with the documented status, never a traceback.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from rag.answer.answerer import Answerer
from rag.render.markdown import split_sources
from rag.settings import Settings
from rag.testing import ScriptedBackend
from tests.conftest import BIN, free_port, run_cli, running_server
from tests.ollama_standin import OllamaStandIn
from ui.api import create_app

SKYWORK_Q = "How many parameters does Skywork-MoE have?"
SKYWORK_ID = "title:7a92a17d60b241af"
TOKEN = "s3cret-test-token"


def server_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return {**env, "RAG_HOME": str(home), "RAG_LLM__BACKEND": "extractive", "HF_HUB_OFFLINE": "1", **extra}


def start_api(home: Path, **extra: str) -> Any:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "rag"), "api", "--port", str(port)]
    return url, running_server(cmd, url + "/health", timeout=120, env=server_env(home, **extra))


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(reply="unused") as standin:
        yield standin


@pytest.fixture(scope="module")
def api(bundled_home: Path, ollama: OllamaStandIn) -> Iterator[str]:
    """A running `rag api` (no token) over the bundled index; Ollama is the stand-in."""
    url, server = start_api(bundled_home, RAG_LLM__OLLAMA_URL=ollama.url)
    with server:
        yield url


@pytest.fixture(scope="module")
def api_with_token(bundled_home: Path) -> Iterator[str]:
    url, server = start_api(bundled_home, RAG_API__TOKEN=TOKEN)
    with server:
        yield url


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The OpenAI error object of a failed response (exactly its four fields, no traceback)."""
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"]
    return body["error"]


# ------------------------------------------------------------------ answers through the openai client


def test_non_streamed_answer_carries_citations_and_sources(api: str) -> None:
    reply = client(api).chat.completions.create(model="paper-rag", messages=[{"role": "user", "content": SKYWORK_Q}])
    text = reply.choices[0].message.content
    assert reply.object == "chat.completion" and reply.choices[0].finish_reason == "stop"
    assert "146 billion" in text and "[1]" in text
    body, listed = split_sources(text)
    assert listed == [(1, SKYWORK_ID)] and "**Sources**" not in body
    citations = reply.model_extra["citations"]
    assert [c["number"] for c in citations] == [1]
    first = citations[0]
    assert first["paper_id"] == SKYWORK_ID and first["title"].startswith("Skywork-MoE")
    assert first["supported"] is True and first["evidence"] and "url" in first
    assert {e["paper_id"] for e in first["evidence"]} == {SKYWORK_ID}
    assert reply.model_extra["paper_rag"]["backend"] == "extractive"
    assert reply.usage.completion_tokens > 0


def test_streamed_answer_matches_the_non_streamed_one(api: str) -> None:
    c = client(api)
    messages = [{"role": "user", "content": SKYWORK_Q}]
    whole = c.chat.completions.create(model="paper-rag", messages=messages).choices[0].message.content
    chunks = list(c.chat.completions.create(model="paper-rag", messages=messages, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole
    last = [ch for ch in chunks if ch.choices][-1]
    assert last.choices[0].finish_reason == "stop"
    assert [c["paper_id"] for c in last.model_extra["citations"]] == [SKYWORK_ID]
    assert chunks[-1].usage is not None and chunks[-1].choices == []


def test_two_turn_conversation_is_condensed_and_keeps_numbers(api: str) -> None:
    c = client(api)
    first = c.chat.completions.create(model="paper-rag", messages=[{"role": "user", "content": SKYWORK_Q}])
    follow_up = [{"role": "system", "content": "You are helpful."},
                 {"role": "user", "content": SKYWORK_Q},
                 {"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Which techniques does it introduce?"}]
    second = c.chat.completions.create(model="paper-rag", messages=follow_up)
    info = second.model_extra["paper_rag"]
    assert "Skywork-MoE" in info["query"]  # condensed with the earlier turn's cited title
    assert "gating logit normalization" in second.choices[0].message.content
    assert second.model_extra["citations"][0] == {**second.model_extra["citations"][0], "number": 1,
                                                  "paper_id": SKYWORK_ID}


def test_models_search_papers_and_bibtex(api: str) -> None:
    c = client(api)
    ids = [m.id for m in c.models.list().data]
    assert {"paper-rag", "extractive"} <= set(ids)
    assert c.models.retrieve("extractive").id == "extractive"
    reply = c.chat.completions.create(model="extractive", messages=[{"role": "user", "content": SKYWORK_Q}],
                                      temperature=0.3, max_tokens=50, top_p=0.9, user="someone",
                                      extra_body={"k": 3, "some_future_field": {"x": 1}})
    assert reply.model == "extractive" and reply.model_extra["citations"]

    hits = httpx.post(f"{api}/v1/search", json={"query": "Skywork-MoE experts", "k": 2}).json()
    assert len(hits["results"]) == 2 and hits["results"][0]["paper_id"] == SKYWORK_ID
    assert set(hits["results"][0]) >= {"paper_id", "title", "score", "dense", "lexical", "snippet", "links"}
    assert httpx.post(f"{api}/v1/search", json={"query": "Skywork", "year": "1990..1991"}).json()["results"] == []

    paper = httpx.get(f"{api}/v1/papers/{SKYWORK_ID}").json()
    assert paper["id"] == SKYWORK_ID and "146 billion" in paper["abstract"] and "source" not in paper
    bib = httpx.get(f"{api}/v1/papers/{SKYWORK_ID}/bibtex")
    assert bib.headers["content-type"].startswith("application/x-bibtex") and "Skywork-MoE" in bib.text


def test_similar_papers(api: str) -> None:
    near = httpx.get(f"{api}/v1/papers/{SKYWORK_ID}/similar", params={"k": 3}).json()
    ids = [h["paper_id"] for h in near["results"]]
    assert near["paper_id"] == SKYWORK_ID and len(ids) == 3 and SKYWORK_ID not in ids
    assert set(near["results"][0]) >= {"paper_id", "title", "score", "dense", "snippet", "links"}
    default = httpx.get(f"{api}/v1/papers/{SKYWORK_ID}/similar").json()["results"]
    assert [h["paper_id"] for h in default][:3] == ids and len(default) == 5
    empty = httpx.get(f"{api}/v1/papers/{SKYWORK_ID}/similar", params={"year": "1990"}).json()
    assert empty["results"] == [] and "year" in empty["empty_because"]
    assert error_of(httpx.get(f"{api}/v1/papers/nope/similar"), 404)["code"] == "not_found"
    for params, param in (({"k": 0}, "k"), ({"k": "five"}, "k"), ({"year": "soon"}, "year")):
        assert error_of(httpx.get(f"{api}/v1/papers/{SKYWORK_ID}/similar", params=params), 400)["param"] == param


# ------------------------------------------------------------------ bad input: error objects


LONG = "a" * 3000


@pytest.mark.parametrize(("body", "status", "param"), [
    (b"{not json", 400, None),
    (b"[]", 400, None),
    (b'{"messages": []}', 400, "messages"),
    (b'{"model": "paper-rag"}', 400, "messages"),
    (b'{"messages": [{"role": "tool", "content": "x"}]}', 400, "messages.0.role"),
    (b'{"messages": [{"role": "wizard", "content": "x"}]}', 400, "messages.0.role"),
    (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}', 400, "messages"),
    (b'{"messages": [{"role": "user", "content": "   "}]}', 400, "messages.0.content"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}', 400, "messages.0.content"),
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', 400, "temperature"),
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": 7}', 400, "temperature"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}', 400, "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400, "stream"),
    (b'{"messages": [{"role": "user", "content": "x"}], "n": 2}', 400, "n"),
    (b'{"messages": "hello"}', 400, "messages"),
    (b'{"messages": [{"role": "user", "content": "' + LONG.encode() + b'"}]}', 413, "messages.0.content"),
    (b'{"messages": [{"role": "user", "content": "x"}], "model": "/tmp/evil.gguf"}', 404, "model"),
])
def test_bad_chat_requests_get_error_objects(api: str, body: bytes, status: int, param: str | None) -> None:
    response = httpx.post(f"{api}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert error_of(response, status)["param"] == param


def test_a_one_megabyte_message_is_413_before_it_is_read(api: str) -> None:
    huge = {"messages": [{"role": "user", "content": "x" * (1 << 20)}]}
    err = error_of(httpx.post(f"{api}/v1/chat/completions", json=huge), 413)
    assert err["code"] == "request_too_large"
    with pytest.raises(openai.APIStatusError) as info:
        client(api).chat.completions.create(model="paper-rag", messages=huge["messages"])
    assert info.value.status_code == 413


def test_unknown_things_are_404(api: str) -> None:
    assert error_of(httpx.get(f"{api}/v1/papers/title:0000000000000000"), 404)["code"] == "not_found"
    assert error_of(httpx.get(f"{api}/v1/papers/nope/bibtex"), 404)
    assert error_of(httpx.get(f"{api}/v1/nothing-here"), 404)
    assert error_of(httpx.get(f"{api}/v1/models/gpt-17"), 404)
    gpt = error_of(httpx.post(f"{api}/v1/chat/completions", json={"model": "gpt-4o", "messages": [
        {"role": "user", "content": SKYWORK_Q}]}), 404)  # not a 503 about Ollama: the names to use instead
    assert gpt["code"] == "model_not_found" and "use one of paper-rag, " in gpt["message"]
    assert "qwen2.5-coder-1.5b" in gpt["message"] and "gpt-4o" not in gpt["message"]
    with pytest.raises(openai.NotFoundError) as info:  # the stand-in Ollama has no such model
        client(api).chat.completions.create(model="ollama/no-such-model:7b",
                                            messages=[{"role": "user", "content": SKYWORK_Q}])
    assert info.value.body["code"] == "model_not_found"
    assert error_of(httpx.post(f"{api}/v1/search", json={"query": "x", "k": "five"}), 400)["param"] == "k"
    assert error_of(httpx.post(f"{api}/v1/search", json={"query": "x", "year": "last year"}), 400)["param"] == "year"


def test_backend_down_is_503(bundled_home: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    url, server = start_api(bundled_home, RAG_LLM__BACKEND="ollama", RAG_LLM__OLLAMA_URL=dead)
    with server:
        with pytest.raises(openai.InternalServerError) as info:
            client(url).chat.completions.create(model="paper-rag", messages=[{"role": "user", "content": SKYWORK_Q}])
        assert info.value.status_code == 503 and "Ollama" in info.value.body["message"]
        assert httpx.post(f"{url}/v1/search", json={"query": "Skywork-MoE"}).status_code == 200  # no LLM needed


# ------------------------------------------------------------------ auth


def test_token_required_when_set(api_with_token: str) -> None:
    messages = [{"role": "user", "content": SKYWORK_Q}]
    with pytest.raises(openai.AuthenticationError) as info:
        client(api_with_token, "wrong-token").chat.completions.create(model="paper-rag", messages=messages)
    assert info.value.body["code"] == "invalid_api_key"
    missing = httpx.post(f"{api_with_token}/v1/chat/completions", json={"messages": messages})
    assert "no API key" in error_of(missing, 401)["message"] and missing.headers["www-authenticate"] == "Bearer"
    assert error_of(httpx.get(f"{api_with_token}/v1/papers/{SKYWORK_ID}"), 401)["code"] == "invalid_api_key"
    assert error_of(httpx.get(f"{api_with_token}/v1/models", headers={"Authorization": f"Basic {TOKEN}"}), 401)
    assert error_of(httpx.post(f"{api_with_token}/v1/chat/completions", content=b"{bad"), 401)  # before parsing
    reply = client(api_with_token, TOKEN).chat.completions.create(model="paper-rag", messages=messages)
    assert reply.model_extra["citations"]
    assert httpx.get(f"{api_with_token}/health").status_code == 200


def test_refuses_a_public_address_without_a_token() -> None:
    result = run_cli("api", "--host", "0.0.0.0", "--port", str(free_port()), timeout=60)
    assert result.returncode == 2
    assert "RAG_API__TOKEN" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------ in process: the concurrency bound, failures


@pytest.fixture
def scripted(bundled_copy: Path, embedder: Any) -> Any:  # type: ignore[no-untyped-def]
    def make(backend: ScriptedBackend, **settings: Any) -> TestClient:
        cfg = Settings(home=bundled_copy, llm={"backend": "llamacpp"}, **settings)
        return TestClient(create_app(cfg, answerer=Answerer(cfg, embedder=embedder, backend=backend)))
    return make


def test_over_the_concurrency_bound_is_429_and_slots_come_back(scripted: Any) -> None:
    started, release = threading.Event(), threading.Event()

    def reply(messages: list[Any]) -> str:
        started.set()
        release.wait(30)
        return "Skywork-MoE has 146 billion parameters [1]."

    http = scripted(ScriptedBackend(reply), ui={"concurrency": 1})
    body = {"messages": [{"role": "user", "content": SKYWORK_Q}]}
    results: list[httpx.Response] = []
    first = threading.Thread(target=lambda: results.append(http.post("/v1/chat/completions", json=body)))
    first.start()
    assert started.wait(30)
    busy = http.post("/v1/chat/completions", json=body)
    assert error_of(busy, 429)["code"] == "rate_limit_exceeded" and busy.headers["retry-after"] == "1"
    release.set()
    first.join(30)
    assert results[0].status_code == 200
    assert results[0].json()["citations"][0]["paper_id"] == SKYWORK_ID
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as streamed:
        assert streamed.status_code == 200
        next(streamed.iter_lines())  # the client reads one chunk and closes the response
    assert http.post("/v1/chat/completions", json=body).status_code == 200  # both slots came back


def test_a_backend_failing_before_any_text_is_503_or_an_error_event(scripted: Any) -> None:
    http = scripted(ScriptedBackend("never sent", fail_after=0))
    body = {"messages": [{"role": "user", "content": SKYWORK_Q}]}
    assert error_of(http.post("/v1/chat/completions", json=body), 503)["code"] == "backend_unavailable"
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as streamed:
        lines = [line for line in streamed.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert '"code": "backend_unavailable"' in lines[-2] and "connection dropped" in lines[-2]


def test_unsupported_sentences_are_marked_in_the_text_and_the_citations(scripted: Any) -> None:
    backend = ScriptedBackend("Skywork-MoE has 146 billion parameters [1]. It was trained on the Moon [1].")
    http = scripted(backend)
    reply = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": SKYWORK_Q}],
                                                    "max_tokens": 5}).json()
    text = reply["choices"][0]["message"]["content"]
    assert "trained on the Moon [1]. \u26a0 *unsupported*" in text
    assert reply["paper_rag"]["unsupported_sentences"] == ["It was trained on the Moon [1]."]
    assert reply["citations"][0]["supported"] is False  # one of its sentences is not backed by it
