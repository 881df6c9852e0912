"""``rag serve``: prepare the index and the models, then run the web chat until interrupted.

Steps, each printed: ingest the bundled corpus when the index is empty (in a child process, so
that torch, which only ingesting needs, never enters the server); load the
embedder and the lexical index; resolve the answer backend (so the first user does not
wait for a model to load); launch Gradio on ``127.0.0.1`` unless ``--host`` says
otherwise, with a login only if ``RAG_UI__AUTH`` is set and a share link only with
``--share``.

The OpenAI-compatible API (`ui.api`) answers on the same port under ``/v1``: `combined_app` is
the API's FastAPI app with the web chat mounted at ``/`` (``gr.mount_gradio_app``), sharing one
`ui.shared.AnswererPool`, so models load once. The API keeps its own rules: its bearer token
(``RAG_API__TOKEN``; the web login does not cover it) and its refusal of a non-loopback address
without one, in which case the chat is served alone, with a warning. ``--share`` (Gradio's own
launcher) serves the chat alone too. Left out: the page and its handlers (`ui.app`), the routes
(`ui.api`).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rag.bundled import CORPUS, bundled_file
from rag.errors import InputError
from rag.llm import generates
from rag.settings import Settings
from ui.guard import LOOPBACK_NAMES, CorsGate, OriginPolicy


def bundled_corpus() -> Path | None:
    """The corpus shipped with paper-rag (`rag.bundled`), if this install has it."""
    path = bundled_file(CORPUS)
    return path if path.is_file() else None


def _ingest(settings: Settings, paths: list[Path]) -> Any:
    from rag.ingest.ingestor import Ingestor

    return Ingestor(settings).run(paths)


def ingest_apart(settings: Settings, corpus: Path) -> Any:
    """Ingest ``corpus`` in a child process and return its `rag.ingest.ingest_summary.IngestSummary` (its errors
    are raised here). An ingest loads torch and the embedding model (~500 MB) for its batches; a
    server embeds queries and answer checks through ONNX Runtime, and would otherwise hold them
    for its lifetime (the first `rag serve` of a fresh install: README, Performance)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_ingest, settings, [corpus]).result()


def prepare(settings: Settings, echo: Callable[[str], None] = print, embedder: Any | None = None) -> Any:
    """Ingest if empty (in a child process, `ingest_apart`, unless given an ``embedder`` to reuse),
    warm the models; returns the `WebApp` ready to launch."""
    from rag.ingest.ingest_summary import summary_lines
    from rag.ingest.ingestor import Ingestor
    from rag.ingest.ingestor import stats as index_stats
    from ui.app import WebApp

    app = WebApp(settings, embedder=embedder)
    info = index_stats(settings)
    if not info["ingested"] or not info["papers"]:
        corpus = bundled_corpus()
        if corpus is None:
            echo("the index is empty and data/papers.jsonl was not found: upload corpus files in the web chat")
        else:
            echo(f"the index at {settings.home} is empty: ingesting {corpus} …")
            if embedder is None:
                summary = ingest_apart(settings, corpus)
            else:
                summary = Ingestor(settings, embedder=embedder).run([corpus])
            for line in summary_lines(summary, str(settings.home)):  # as `rag ingest` prints them
                echo(line)
    else:
        echo(f"index: {info['papers']} papers, {info['chunks']} chunks in {settings.home}")
    echo("loading the embedding model …")
    app.pool.embedder.warm()
    app.facets(refresh=True)
    answerer = app.pool.default
    backend, notes = answerer.backend_for(None)
    for note in notes:
        echo(note)
    if not generates(backend) and not notes:
        echo("answering extractively")
    return app


def port_taken(host: str, port: int, reason: str) -> InputError:
    """The error for a port this server cannot listen on, naming both ways to choose another."""
    return InputError(f"cannot listen on {host}:{port}: {reason}",
                      f"stop the other server, or choose a free port: `rag serve --port {port + 1}` "
                      f"or RAG_UI__PORT={port + 1}")


def check_port(host: str, port: int) -> None:
    """Raise `InputError` unless ``host:port`` can be bound now (as uvicorn binds: SO_REUSEADDR).

    Checked before anything is loaded or announced, so a second ``rag serve`` says so at once."""
    if not 0 < port < 65536:
        raise InputError(f"port {port} is out of range", "give a port from 1 to 65535 with --port or RAG_UI__PORT")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as err:
        raise InputError(f"cannot listen on {host!r}: {err.strerror or err}",
                         "give an address of this machine with --host or RAG_UI__HOST (default 127.0.0.1)") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as err:
            reason = "the port is in use" if err.errno == errno.EADDRINUSE else str(err.strerror or err)
            raise port_taken(host, port, reason) from None


def combined_app(web: Any, host: str, port: int) -> Any:
    """The API app (``/v1``, ``/health``) with the web chat of ``web`` (a `ui.app.WebApp`) mounted at ``/``."""
    import gradio as gr

    from ui.api import create_app
    from ui.service import PaperService

    settings = web.settings
    api = create_app(settings, service=PaperService(settings, pool=web.pool))
    options = web.launch_options(host, port)
    options.pop("share", None)
    app = gr.mount_gradio_app(api, web.queued(), path="/", **options)
    return CorsGate(app, OriginPolicy.of(settings.ui.allowed_origins))  # outside Gradio's own CORS middleware


def api_refusal(host: str, settings: Settings) -> str | None:
    """Why the API cannot be mounted on ``host`` (no token on a non-loopback address), or None."""
    from ui.api import check_exposure

    try:
        check_exposure(host, settings.api.token)
    except InputError as err:
        return str(err)
    return None


def serve(settings: Settings, host: str | None = None, port: int | None = None, share: bool = False,
          echo: Callable[[str], None] = print) -> None:
    """Blocks until the server is stopped (Ctrl-C)."""
    from ui.app import parse_auth

    auth = parse_auth(settings.ui.auth)  # refuse a malformed value before loading anything
    host = host or settings.ui.host
    port = port or settings.ui.port
    check_port(host, port)  # before the minutes of loading, and before announcing the URL
    app = prepare(settings, echo)
    if host not in LOOPBACK_NAMES and not auth:
        echo(f"warning: listening on {host} without a login; set RAG_UI__AUTH=user:password to require one")
    if share:
        echo("creating a public share link (--share): anyone with the link can use this chat")
    shown = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    refusal = api_refusal(host, settings)
    if not (share or refusal):
        check_port(host, port)  # again: uvicorn would log a port taken meanwhile and exit 1 without a fix
    if share or refusal:
        echo(f"warning: the API (/v1) is not served here: {'--share serves the chat alone' if share else refusal}")
    else:
        echo(f"OpenAI-compatible API: {shown}/v1{' (token required)' if settings.api.token else ''}")
    echo(f"web chat: {shown}{' (login required)' if auth else ''}  — Ctrl-C to stop")
    if not (share or refusal):
        import uvicorn

        uvicorn.run(combined_app(app, host, port), host=host, port=port, log_level="warning")
        return
    try:
        app.launched(host=host, port=port, share=share, quiet=True)
    except OSError as err:  # taken while the models loaded: Gradio's "Cannot find empty port"
        if "port" not in str(err).lower():
            raise
        raise port_taken(host, port, "the port was taken while the models loaded") from None
