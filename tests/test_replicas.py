"""Replicas: two ``rag serve`` processes, each with its own data home, sharing one ``chroma run`` server.

A paper ingested through one replica's settings is searchable and citable from the other within
the reader's staleness check (each search compares the collection's generation on the server with
the one its lexical index was built from); a paper removed likewise; neither serves it from a
stale lexical index afterwards (BM25 would still find its made-up name).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag.index.embeddings import Embedder
from rag.ingest.ingestor import Ingestor
from rag.settings import Settings

from .conftest import BIN, BUNDLED, free_port, run_cli, running_server

NEW = {"title": "ZQRTX: Sparse Routers for Tiny Experts",
       "abstract": "ZQRTX routes each token to one of sixty-four tiny experts with a learned sparse router. "
                   "On language modelling it matches a dense model with a third of the compute."}
QUESTION = "What does ZQRTX route tokens to?"


def replica_env(home: Path, chroma: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return {**env, "RAG_HOME": str(home), "RAG_STORE__CHROMA_URL": chroma, "RAG_LLM__BACKEND": "extractive",
            "HF_HUB_OFFLINE": "1"}


def titles(url: str, query: str) -> list[str]:
    got = httpx.post(url + "/v1/search", json={"query": query, "k": 3}, timeout=60)
    got.raise_for_status()
    return [hit["title"] for hit in got.json()["results"]]


def eventually(check: Callable[[], bool], within: float = 30.0) -> float:
    """Seconds until ``check()`` holds; fails after ``within``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, f"not within {within:.0f}s"
        time.sleep(0.25)
    return time.monotonic() - start


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_serve_replicas_share_one_chroma_server(tmp_path: Path, chroma_server: str, embedder: Embedder) -> None:
    corpus = tmp_path / "papers.jsonl"
    corpus.write_text("".join(BUNDLED.read_text(encoding="utf-8").splitlines(keepends=True)[:8]), encoding="utf-8")
    first = json.loads(corpus.read_text(encoding="utf-8").splitlines()[0])["title"]
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps(NEW) + "\n", encoding="utf-8")
    homes = {name: tmp_path / name for name in ("a", "b")}
    Ingestor(Settings(home=homes["a"], store={"chroma_url": chroma_server}), embedder=embedder).run([corpus])

    with ExitStack() as stack:
        urls: dict[str, str] = {}
        for name, home in homes.items():
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            stack.enter_context(running_server([str(BIN / "rag"), "serve", "--port", str(port)],
                                               urls[name] + "/health", timeout=240,
                                               env=replica_env(home, chroma_server)))
        for url in urls.values():
            assert titles(url, first)[0] == first  # each replica built its lexical index from the server

        got = run_cli("ingest", str(new), env=replica_env(homes["a"], chroma_server))
        assert got.returncode == 0, got.stderr
        waited = eventually(lambda: NEW["title"] in titles(urls["b"], "ZQRTX sparse routers"))
        assert waited < 10  # the staleness check runs at most once a second per replica
        assert NEW["title"] in titles(urls["a"], "ZQRTX sparse routers")
        reply: dict[str, Any] = httpx.post(urls["b"] + "/v1/chat/completions", timeout=120, json={
            "model": "extractive", "messages": [{"role": "user", "content": QUESTION}]}).json()
        cited = [c["title"] for c in reply["citations"]]
        assert NEW["title"] in cited, reply

        listed = json.loads(run_cli("papers", "list", "--json", env=replica_env(homes["b"], chroma_server)).stdout)
        paper_id = next(p["paper_id"] for p in listed if p["title"] == NEW["title"])
        got = run_cli("papers", "rm", paper_id, env=replica_env(homes["b"], chroma_server))
        assert got.returncode == 0, got.stderr
        for url in urls.values():  # gone from both, BM25 included: no stale lexical index answers it
            eventually(lambda url=url: NEW["title"] not in titles(url, "ZQRTX sparse routers"))
            assert titles(url, first)[0] == first
