"""Benchmark: the OpenAI-compatible API (``rag api``) against the same answers computed in-process.

A real ``rag api`` process over a data home, extractive backend (no LLM: what is measured is the
API's own cost, not a model's), driven with ``httpx`` the way an OpenAI client drives it:

1. non-streamed ``/v1/chat/completions`` against `rag.answer.answerer.Answerer.ask` in this process, on
   the same questions, both warmed on every question first (the first answer over a paper embeds
   its abstract's sentences: ~0.4-1 s here, then cached), then interleaved (API, in-process,
   in-process, API, ...) so load drift hits both arms; the answers are checked to be the same
   text. Target: API median <= 1.1x;
2. streamed: time to the first byte of the response body and to the first content delta, next
   to the in-process time to the first token event;
3. ``clients`` concurrent streaming clients started together (a barrier), each retrying a 429
   after its ``Retry-After`` as OpenAI's client does: how many were answered, the 429s, and
   latency median / p95 / max. Once at the configured answer bound (``RAG_UI__CONCURRENCY``,
   default 4) and once with the bound raised to ``clients``.

`measure` returns raw figures only; `bench_api` (``rag bench``'s step 9) turns them into table rows. Left out: LLM
backends (their time is the model's; see `eval.bench.llm`), TLS and proxies, MCP.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from eval.bench.figures import BIN, DEV, TARGETS, Log, median, p95, table_row, verdict
from rag.testing import free_port, running_server


@contextmanager
def api_server(home: Path, env: dict[str, str] | None = None, timeout: float = 240) -> Iterator[str]:
    """A ``rag api`` process over ``home`` (extractive); yields its base URL, stops it after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("RAG_")}, "RAG_HOME": str(home),
            "RAG_LLM__BACKEND": "extractive", "HF_HUB_OFFLINE": "1", **(env or {})}
    with running_server([str(BIN / "rag"), "api", "--port", str(port)], url + "/health", timeout, env=full,
                        start_new_session=True):
        yield url


def _body(question: str, stream: bool) -> dict[str, Any]:
    return {"model": "extractive", "messages": [{"role": "user", "content": question}], "stream": stream}


def api_answer(client: httpx.Client, url: str, question: str) -> str:
    response = client.post(url + "/v1/chat/completions", json=_body(question, False))
    response.raise_for_status()
    return str(response.json()["paper_rag"]["answer"])


def api_stream(client: httpx.Client, url: str, question: str, retries: int = 100) -> dict[str, Any]:
    """One streamed answer, 429s retried after Retry-After: times from the first try (seconds)."""
    start = time.perf_counter()
    refused = 0
    for _ in range(retries + 1):
        with client.stream("POST", url + "/v1/chat/completions", json=_body(question, True)) as response:
            if response.status_code == 429:
                refused += 1
                response.read()
                time.sleep(float(response.headers.get("retry-after", "1")))
                continue
            response.raise_for_status()
            first_byte = first_text = None
            buffer, done = b"", False
            for raw in response.iter_raw():
                now = time.perf_counter() - start
                first_byte = now if first_byte is None else first_byte
                buffer += raw
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    data = event.removeprefix(b"data: ")
                    if data == b"[DONE]":
                        done = True
                    elif first_text is None and _has_text(data):
                        first_text = now
            return {"ok": done, "refused": refused, "first_byte_s": first_byte, "first_text_s": first_text,
                    "total_s": time.perf_counter() - start}
    return {"ok": False, "refused": refused, "first_byte_s": None, "first_text_s": None,
            "total_s": time.perf_counter() - start}


def _has_text(data: bytes) -> bool:
    try:
        choices = json.loads(data).get("choices") or [{}]
    except ValueError:
        return False
    return bool(choices[0].get("delta", {}).get("content"))


def in_process_first_token(answerer: Any, question: str) -> float:
    start = time.perf_counter()
    first = None
    for event in answerer.stream(question, backend="extractive"):
        if first is None and event.kind == "token" and event.text:
            first = time.perf_counter() - start
    return first if first is not None else time.perf_counter() - start


def concurrent_streams(url: str, questions: Sequence[str], clients: int) -> dict[str, Any]:
    """``clients`` streaming clients released together; each asks one question (cycling)."""
    barrier = threading.Barrier(clients)
    results: list[dict[str, Any]] = [{} for _ in range(clients)]

    def one(i: int) -> None:
        with httpx.Client(timeout=300) as client:
            barrier.wait()
            try:
                results[i] = api_stream(client, url, questions[i % len(questions)])
            except httpx.HTTPError as err:
                results[i] = {"ok": False, "error": f"{type(err).__name__}: {err}", "refused": 0}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"clients": clients, "wall_s": time.perf_counter() - started, "results": results,
            "answered": sum(bool(r.get("ok")) for r in results), "refused_429": sum(r["refused"] for r in results)}


def measure(home: Path, questions: Sequence[str], embedder: Any, rounds: int = 3, clients: int = 20,
            bound: int | None = None, log: Log = print) -> dict[str, Any]:
    """Every figure of the module docstring, raw (lists of seconds)."""
    from rag.answer.answerer import Answerer
    from rag.settings import Settings

    settings = Settings(home=home, llm={"backend": "extractive"})
    bound = bound or settings.ui.concurrency
    answerer = Answerer(settings, embedder=embedder)
    out: dict[str, Any] = {"questions": len(questions), "rounds": rounds, "bound": bound}
    with api_server(home, {"RAG_UI__CONCURRENCY": str(bound)}) as url, httpx.Client(timeout=300) as client:
        for q in questions:  # warm both arms: models, lexical index, each answer's sentence vectors
            api_answer(client, url, q)
            answerer.ask(q, backend="extractive")
        api_s: list[float] = []
        local_s: list[float] = []
        same = 0
        log(f"api: {len(questions)} questions x {rounds} rounds, non-streamed, interleaved with in-process")
        for r in range(rounds):
            for i, q in enumerate(questions):
                for arm in (("api", "local") if (i + r) % 2 == 0 else ("local", "api")):
                    start = time.perf_counter()
                    if arm == "api":
                        remote = api_answer(client, url, q)
                        api_s.append(time.perf_counter() - start)
                    else:
                        local = answerer.ask(q, backend="extractive").answer
                        local_s.append(time.perf_counter() - start)
                same += remote == local
        out |= {"api_s": api_s, "in_process_s": local_s, "same_answers": same,
                "compared": rounds * len(questions)}
        log("api: streamed, time to first byte")
        streams = [api_stream(client, url, q) for q in questions]
        out |= {"stream": streams,
                "in_process_first_token_s": [in_process_first_token(answerer, q) for q in questions]}
        log(f"api: {clients} concurrent streaming clients, bound {bound}")
        out["concurrent"] = [concurrent_streams(url, questions, clients)]
    if bound < clients:
        log(f"api: {clients} concurrent streaming clients, bound raised to {clients}")
        with api_server(home, {"RAG_UI__CONCURRENCY": str(clients)}) as url:
            with httpx.Client(timeout=300) as client:
                for q in questions:  # warm as the first server was
                    api_answer(client, url, q)
            out["concurrent"].append(concurrent_streams(url, questions, clients) | {"bound": clients})
    out["concurrent"][0]["bound"] = bound
    return out


__all__ = ["api_server", "api_stream", "concurrent_streams", "measure"]


def api_questions(n: int = 10) -> list[str]:
    """The first ``n`` English single-turn development questions (answerable ones)."""
    out = []
    for line in DEV.read_text(encoding="utf-8").splitlines() if DEV.exists() else []:
        record = json.loads(line) if line.strip() else {}
        if record.get("question") and record.get("gold") and record.get("lang", "en") == "en":
            out.append(record["question"])
    return out[:n] or ["How many parameters does Skywork-MoE have?"]


def bench_api(home: Path, embedder: Any, rounds: int = 3, clients: int = 20, log: Log = print) -> dict[str, Any]:
    """`measure` on ``home`` as rows: API vs in-process, first byte, concurrent clients."""
    raw = measure(home, api_questions(), embedder, rounds=rounds, clients=clients, log=log)
    api_med, local_med = median(raw["api_s"]), median(raw["in_process_s"])
    ratio, target = api_med / local_med, TARGETS["api"]
    first_byte = [s["first_byte_s"] for s in raw["stream"] if s["first_byte_s"] is not None]
    first_text = [s["first_text_s"] for s in raw["stream"] if s["first_text_s"] is not None]
    local_first = median(raw["in_process_first_token_s"])
    rows = [table_row("API non-streamed answer (extractive), median", f"{api_med * 1000:.1f} ms",
                      f"{local_med * 1000:.1f} ms in-process", ratio, f"<= {target}", verdict(ratio, target)),
            table_row("API streamed: first byte, median", f"{median(first_byte) * 1000:.1f} ms",
                      f"{local_first * 1000:.1f} ms in-process first token", median(first_byte) / local_first, "-",
                      "info"),
            table_row("API streamed: first answer text, median", f"{median(first_text) * 1000:.1f} ms",
                      f"{local_first * 1000:.1f} ms in-process first token", median(first_text) / local_first, "-",
                      "info")]
    for run in raw["concurrent"]:
        totals = [r["total_s"] for r in run["results"] if r.get("ok")]
        rows.append(table_row(f"{run['clients']} concurrent streams, bound {run['bound']}: p95 "
                              f"({run['answered']}/{run['clients']} answered, {run['refused_429']} x 429 retried)",
                              f"{p95(totals):.2f} s",
                              f"{median(totals):.2f} s median, {max(totals, default=0):.2f} s max",
                              None, "all answered", "pass" if run["answered"] == run["clients"] else "miss"))
    summary = {"ours": api_med, "baseline": local_med, "ratio": ratio, "target": target,
               "first_byte_median_s": median(first_byte), "first_text_median_s": median(first_text),
               "in_process_first_token_median_s": local_first,
               "concurrent": [{"clients": c["clients"], "bound": c["bound"], "answered": c["answered"],
                               "refused_429": c["refused_429"], "wall_s": c["wall_s"],
                               "p95_s": p95([r["total_s"] for r in c["results"] if r.get("ok")]),
                               "median_s": median([r["total_s"] for r in c["results"] if r.get("ok")])}
                              for c in raw["concurrent"]]}
    return {**summary, "raw": raw, "rows": rows}
