"""The ``rag chat`` loop: one question per line (from a terminal, or piped), each answered in one
conversation, shown as ``rag ask`` shows an answer (`rag.cli_output.show_answer`) or as one JSON
object per line; the chat commands (`CHAT_COMMANDS`: ``/new``, ``/md``, ``/bib``, ``/help``,
``/quit``); "make a table of ..." answered with a table (`rag.table.terminal.table_turn`), a turn
of the conversation as an answer is (in ``/md`` and ``/bib``, and what a follow-up refers to). A bad
question is reported and the conversation goes on; the failed turns set the exit status.

Left out: the command's options (`rag.cli.chat`), the conversation itself (`rag.chat`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer

from rag.cli_options import CLI_PARAMS, settings
from rag.cli_output import EXIT_FAILED, console, emit_json, out, show_answer
from rag.errors import RagError

CHAT_COMMANDS = {"/new": "start a new conversation", "/md FILE": "write the conversation as Markdown",
                 "/bib FILE": "write the cited papers as BibTeX", "/help": "this list",
                 "/quit": "leave (or Ctrl-D)"}


def chat_help() -> str:
    return "Commands: " + "; ".join(f"{name} {what}" for name, what in CHAT_COMMANDS.items())


def converse(backend: str | None, model: str | None, k: int | None, as_json: bool) -> None:
    """Answer the lines of stdin until ``/quit`` or its end; exit status `EXIT_FAILED` when a turn failed."""
    from rich.text import Text

    from rag.answer.answerer import Answerer
    from rag.answer.request import AskRequest, check_k, with_settings
    from rag.chat import Conversation
    from rag.notices import Notices
    from rag.table.terminal import table_turn

    cfg = settings()
    check_k(cfg, k, "-k")  # a bad -k is said before the first question
    conversation = Conversation(Answerer(with_settings(cfg, backend, model)))
    notices = Notices()  # each note once in this conversation
    failed = 0
    interactive = sys.stdin.isatty()
    if interactive and not as_json:
        console.print(f"Ask about the papers. {chat_help()}", markup=False, highlight=False)
    while True:
        try:
            line = (input("\n> ") if interactive else input()).strip()
        except EOFError:
            break
        if not line:
            continue
        command, _, arg = line.partition(" ")
        if command in ("/quit", "/exit"):
            break
        if command == "/new":
            conversation.reset()
            console.print("new conversation")
        elif command in ("/md", "/bib"):
            text = conversation.to_markdown() if command == "/md" else conversation.to_bibtex()
            Path(arg or f"conversation.{command[1:]}").write_text(text, encoding="utf-8")
            console.print(Text(f"wrote {arg or f'conversation.{command[1:]}'}"))
        elif command in ("/help", "/?"):
            console.print(chat_help(), markup=False, highlight=False)
        elif re.fullmatch(r"/[A-Za-z]\w*", command):  # a mistyped command is never sent as a question
            console.print(Text.assemble(("unknown command ", "yellow"), command, f". {chat_help()}"))
        else:
            try:
                request = AskRequest.of(cfg, line, backend=backend, model=model, k=k, params=CLI_PARAMS)
                if (made := table_turn(conversation, request.question, console, None if as_json else out,
                                       k=request.k)) is not None:  # "make a table of ...": a turn too
                    if as_json:
                        emit_json(made.as_dict(), lines=True)
                    continue
                answer = show_answer(conversation.respond(request), as_json=as_json, lines=True,
                                     notices=notices,
                                     backend_notes=lambda: conversation.answerer.backend_for()[1])
                failed += bool(answer.error)
            except RagError as err:  # a bad question must not end the conversation
                failed += 1
                if as_json:
                    emit_json({"question": line, "error": err.user_message()}, lines=True)
                else:
                    console.print(Text.assemble(("error: ", "red"), err.user_message()))
    if failed:
        if not as_json:
            console.print(f"{failed} turn{'s' if failed != 1 else ''} failed", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED)


__all__ = ["CHAT_COMMANDS", "chat_help", "converse"]
