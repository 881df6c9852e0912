"""``rag serve``: prepare the index and the models, then run the web chat until interrupted.

Steps, each printed: ingest the bundled corpus when the index is empty; load the
embedder and the lexical index; resolve the answer backend (so the first user does not
wait for a model to load); launch Gradio on ``127.0.0.1`` unless ``--host`` says
otherwise, with a login only if ``RAG_UI__AUTH`` is set and a share link only with
``--share``. Left out: the page and its handlers (`ui.app`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def bundled_corpus() -> Path | None:
    for candidate in (Path("data/papers.jsonl"), ROOT / "data" / "papers.jsonl"):
        if candidate.is_file():
            return candidate
    return None


def prepare(settings: Settings, echo: Callable[[str], None] = print, embedder: Any | None = None) -> Any:
    """Ingest if empty, warm the models; returns the `WebApp` ready to launch (``embedder``: reuse one)."""
    from rag.ingest import Ingestor
    from rag.ingest import stats as index_stats
    from ui.app import WebApp

    app = WebApp(settings, embedder=embedder)
    info = index_stats(settings)
    if not info["ingested"] or not info["papers"]:
        corpus = bundled_corpus()
        if corpus is None:
            echo("the index is empty and data/papers.jsonl was not found: upload corpus files in the web chat")
        else:
            echo(f"the index at {settings.home} is empty: ingesting {corpus} …")
            summary = Ingestor(settings, embedder=app.pool.embedder).run([corpus])
            echo(f"ingested {summary.papers_total} papers ({summary.chunks_total} chunks, "
                 f"{summary.rejected} rejected) in {summary.seconds:.1f}s")
    else:
        echo(f"index: {info['papers']} papers, {info['chunks']} chunks in {settings.home}")
    echo("loading the embedding model …")
    app.pool.embedder.warm()
    app.facets(refresh=True)
    answerer = app.pool.default
    backend, notes = answerer.backend_for(None)
    for note in notes:
        echo(note)
    if backend is None and not notes:
        echo("answering extractively")
    return app


def serve(settings: Settings, host: str | None = None, port: int | None = None, share: bool = False,
          echo: Callable[[str], None] = print) -> None:
    """Blocks until the server is stopped (Ctrl-C)."""
    from ui.app import parse_auth

    auth = parse_auth(settings.ui.auth)  # refuse a malformed value before loading anything
    app = prepare(settings, echo)
    host = host or settings.ui.host
    port = port or settings.ui.port
    if host not in LOOPBACK and not auth:
        echo(f"warning: listening on {host} without a login; set RAG_UI__AUTH=user:password to require one")
    if share:
        echo("creating a public share link (--share): anyone with the link can use this chat")
    echo(f"web chat: http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
         f"{' (login required)' if auth else ''}  — Ctrl-C to stop")
    app.launched(host=host, port=port, share=share, quiet=True)
