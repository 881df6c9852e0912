"""A chat message that asks for a table ("make a table of ...", "compare CoTTA and PSMT in a table":
`rag.table.requests`), answered with the table in the web chat and in the API's chat completions.

Both call `rag.table.chat.requested_table`; this module only shows its result:

- `web_table`: the web chat's message, drawn as the Compare panel draws a table (`ui.compare.table_html`,
  evidence on hover), rows streamed as they finish with the seconds so far, then the overview,
  the notes (how each named paper was found) and the provenance line. Stop ends it after the cell
  being extracted. A finished table is a turn of the tab's conversation
  (`rag.chat.Conversation.add_table`): in its Markdown and BibTeX downloads, and what a follow-up
  ("which of them ...", "the second one") refers to; a stopped one is not (CSV of a table: the
  Compare panel);
- `api_table` / `table_reply`: the chat completion whose message content is the table in Markdown
  (`rag.table.export.with_notes`: the notes first), then its rows as the source list an answer
  gets (``api.markdown_sources``), streamed as one content chunk, with the table's JSON (``rag
  table --json``) under ``paper_rag.table``. The table is a turn of the replayed conversation
  (rows numbered after the history's citations); when the client sends it back in a later
  request's history, `ui.service.PaperService.replay` reads it back as a table turn.

Left out: reading the request and making the table (`rag.table`), the chat's answers (`ui.app`, `ui.api`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr
import nh3

from rag.answer.request import AskRequest
from rag.chat import Turn
from rag.errors import RagError
from rag.render.markdown import sources_markdown
from rag.table.chat import in_conversation, requested_table
from rag.table.columns import Column
from rag.table.export import with_notes
from rag.table.maker import Table, TableMaker
from rag.table.requests import TableRequest, table_request
from ui import render
from ui.compare import table_html
from ui.progress import STAGE_TICK_S
from ui.state import Session

log = logging.getLogger(__name__)
TAGS = render.ALLOWED_TAGS | {"table", "thead", "tbody", "tr", "th", "td"}
ATTRIBUTES = {**render.ALLOWED_ATTRIBUTES, "tr": {"data-paper"}}


class _Stopped(Exception):
    """The Stop button was pressed: the table ends after the cell being extracted."""


def table_message(columns: Sequence[Column], rows: list[Any], stage: str | None = None, total: int | None = None,
                  table: Table | None = None, seconds: float | None = None) -> str:
    """The chat message: a stage line while rows come (``stage``), else the notes, the finished table
    and its provenance; everything escaped, then cleaned to the tags written here."""
    parts = ['<div class="rag-answer">']
    if stage is not None:
        elapsed = f" · {seconds:.0f} s" if seconds is not None else ""
        parts.append(f'<div class="rag-stage rag-pending">{render.esc(stage)}…{elapsed}</div>')
    for note in table.notes if table is not None else []:
        parts.append(f'<div class="rag-banner info"><strong>Note:</strong> {render.esc(note)}</div>')
    parts.append(table_html(list(columns), rows, table.overview.answer if table else "", total))
    if table is not None:
        parts.append(f'<div class="rag-meta">{render.esc(table.model)} · {len(rows)} x {len(columns)} cells in '
                     f"{table.timings.get('total_s', 0):.1f} s · evidence on hover; the Compare panel exports "
                     "tables</div>")
    parts.append("</div>")
    html = "".join(parts).replace("\r", " ").replace("\n", " ")  # one raw HTML block for the chat's Markdown
    return nh3.clean(html, tags=TAGS, attributes=ATTRIBUTES, url_schemes={"http", "https"}, strip_comments=True)


def web_table(app: Any, session: Session, request: TableRequest, ask: AskRequest, at: int,
              started: float) -> Iterator[tuple[Any, ...]]:
    """`ui.app.WebApp.ask`'s outputs while the table ``request`` asks for is drawn into message ``at``
    (a slot is held by the caller)."""
    try:
        columns = request.chosen_columns()
    except RagError as err:
        session.messages[at]["content"] = render.render_error(app.public(err))
        return
    maker = TableMaker(app.pool.get(ask.model, ask.backend))
    events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

    def on_cell(_: Any) -> None:
        if session.stop_requested.is_set():
            raise _Stopped

    def work() -> None:
        try:
            events.put(("done", requested_table(
                maker, request, **in_conversation(session.conversation), k=ask.k, filters=ask.filters,
                backend=ask.backend, on_papers=lambda papers: events.put(("papers", papers)),
                on_row=lambda row: events.put(("row", row)), on_cell=on_cell)))
        except BaseException as err:  # noqa: BLE001 - handed to the handler, which shows it
            events.put(("error", err))

    threading.Thread(target=work, name="chat-table", daemon=True).start()
    rows: list[Any] = []
    total: int | None = None
    shown = ""
    while True:
        try:
            kind, value = events.get(timeout=STAGE_TICK_S)
        except queue.Empty:
            kind, value = "tick", None
        if session.stop_requested.is_set():
            session.messages[at]["content"] = render.render_error(
                f"the table was stopped after {len(rows)} of {total or '?'} rows", "Stopped")
            return
        if kind == "papers":
            total = len(value)
        elif kind == "row":
            rows.append(value)
        elif kind == "done":
            session.messages[at]["content"] = table_message(columns, rows, table=value)
            session.conversation.add_table(ask.question, value)
            return
        elif kind == "error":
            if not isinstance(value, RagError):
                log.error("making the table for %r failed", request, exc_info=value)
            session.messages[at]["content"] = render.render_error(
                app.public(value) if isinstance(value, RagError) else
                f"internal error: {type(value).__name__}: {value}", "Could not make the table")
            return
        stage = "finding the papers" if total is None else f"making the table: {len(rows)} of {total} rows"
        html = table_message(columns, rows, stage, total, seconds=time.monotonic() - started)
        if html != shown:
            session.messages[at]["content"] = shown = html
            yield app.chat(session), gr.skip(), gr.skip(), gr.skip(), gr.skip(), session
        else:  # a silent tick: Gradio ends a closed tab's handler only at a yield
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), session


# ------------------------------------------------------------------ the API's chat completions


def api_table(service: Any, ask: AskRequest) -> Turn | None:
    """The turn of the table the request's question asks for (None: a question, answered as usual),
    made under an answer slot with the model the request names, in the conversation the history
    replays (`ui.service.PaperService.conversation`): "them" are the papers its last turn cited,
    the rows are numbered after its citations."""
    request = table_request(ask.question)
    if request is None:
        return None
    conversation = service.conversation(ask)
    service.slots.take()
    try:
        table = requested_table(TableMaker(conversation.answerer), request, **in_conversation(conversation), k=ask.k,
                                backend=ask.backend)
    finally:
        service.slots.give()
    return conversation.add_table(ask.question, table)


def table_reply(turn: Turn, sources: bool = True) -> tuple[str, dict[str, Any]]:
    """The chat completion's message for a table turn (with ``sources``: its rows as an answer's source
    list, which `ui.service.PaperService.replay` reads back), and what goes beside it
    (`ui.api.Reply.message`)."""
    assert turn.table is not None
    table = turn.table
    listed = sources_markdown(turn.answer) if sources else ""
    text = with_notes(table) + (f"\n{listed}" if listed else "")
    return text, {"citations": [], "paper_rag": {"table": table.as_dict(), "notes": table.notes,
                                                 "model": table.model}}


__all__ = ["api_table", "table_message", "table_reply", "web_table"]
