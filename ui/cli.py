"""The interface commands of ``rag``: ``serve`` (web chat, API under /v1), ``api`` and ``mcp``.

`register_commands` adds them to the ``rag`` typer app. ``rag.cli`` calls it through the
``paper_rag.commands`` entry point (pyproject.toml), so the core library never imports ``ui``.
Each command imports its server when it runs, so ``rag --help`` stays instant. Left out: the
servers themselves (`ui.server`, `ui.api`, `ui.mcp_server`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rag.cli_options import settings


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1; 0.0.0.0 exposes it).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 7860).")] = None,
    share: Annotated[bool, typer.Option(help="Also create a public Gradio share link.")] = False,
) -> None:
    """Start the web chat (and the API under /v1 on the same port); ingests data/papers.jsonl first if the
    index is empty."""
    from ui.server import serve as serve_web

    serve_web(settings(), host=host, port=port, share=share, echo=lambda line: print(line, flush=True))


def api(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1; any other needs "
                                                  "RAG_API__TOKEN).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
) -> None:
    """Serve the OpenAI-compatible API (/v1/chat/completions, /v1/search, /v1/papers/ID ...)."""
    from ui.api import serve as serve_api

    serve_api(settings(), host=host, port=port, echo=lambda line: print(line, file=sys.stderr, flush=True))


def mcp(
    transport: Annotated[str, typer.Option(help="stdio (for a client that spawns this command) or http "
                                                "(streamable HTTP at /mcp).")] = "stdio",
    host: Annotated[str | None, typer.Option(help="HTTP interface (default 127.0.0.1; any other needs "
                                                  "RAG_API__TOKEN).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default 8001).")] = None,
) -> None:
    """Serve the MCP server: tools search_papers, ask, get_paper, similar_papers, export_bibtex; resources paper://ID."""
    from ui.mcp_server import serve as serve_mcp

    if transport not in ("stdio", "http"):
        raise typer.BadParameter(f"--transport {transport!r}: use stdio or http")
    serve_mcp(settings(), transport=transport, host=host, port=port,
              echo=lambda line: print(line, file=sys.stderr, flush=True))


def register_commands(app: typer.Typer) -> None:
    """Add ``serve``, ``api`` and ``mcp`` to ``app``."""
    for command in (serve, api, mcp):
        app.command()(command)
