"""A chat message that asks for a table ("make a table of ...", "compare CoTTA and PSMT in a table":
`rag.table.requests`), answered with the table in the web chat and in the API's chat completions.

Both call `rag.table.chat.requested_table`; this module only shows its result:

- `web_table`: the web chat's message, drawn as the Compare panel draws a table (`ui.compare.table_html`,
  evidence on hover), rows streamed as they finish with the seconds so far, then the overview,
  the notes (how each named paper was found) and the provenance line. Stop ends it after the cell
  being extracted. The table is not a turn of the conversation: a follow-up question is condensed
  with the answers before it (Markdown/CSV/BibTeX downloads: the Compare panel);
- `api_table` / `table_reply`: the chat completion whose message content is the table in Markdown
  (`rag.table.export.to_markdown`, the notes first), streamed as one content chunk, with the
  table's JSON (``rag table --json``) under ``paper_rag.table``.

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

from rag.errors import RagError
from rag.markup import md_text
from rag.request import AskRequest
from rag.table.chat import last_cited, requested_table
from rag.table.columns import Column
from rag.table.export import to_markdown
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
                maker, request, cited=last_cited(session.conversation), k=ask.k, filters=ask.filters,
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


def api_table(service: Any, ask: AskRequest) -> Table | None:
    """The table the request's question asks for (None: a question, answered as usual), made under an
    answer slot with the model the request names; "them" are the papers the history's last answer
    cited (`ui.service.PaperService.conversation`)."""
    request = table_request(ask.question)
    if request is None:
        return None
    conversation = service.conversation(ask)
    service.slots.take()
    try:
        return requested_table(TableMaker(conversation.answerer), request, cited=last_cited(conversation), k=ask.k,
                               backend=ask.backend)
    finally:
        service.slots.give()


def table_markdown(table: Table) -> str:
    """The notes (how each named paper was found), then the table as ``rag table --md`` writes it."""
    notes = "".join(f"*Note:* {md_text(note)}\n\n" for note in table.notes)
    return notes + to_markdown(table)


def table_reply(table: Table) -> tuple[str, dict[str, Any]]:
    """The chat completion's message for a table, and what goes beside it (`ui.api.Reply.message`)."""
    return table_markdown(table), {"citations": [], "paper_rag": {"table": table.as_dict(), "notes": table.notes,
                                                                  "model": table.model}}


__all__ = ["api_table", "table_markdown", "table_message", "table_reply", "web_table"]
