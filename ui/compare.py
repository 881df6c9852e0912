"""The web chat's Compare panel: an extraction table of the cited papers, the papers a search finds,
or papers named by id, streamed row by row, with each cell's evidence sentence on hover and
Markdown, CSV and BibTeX downloads.

`ComparePanel.compare` is a generator (Gradio streams each yield): the papers are chosen
(`rag.table.maker.TableMaker.papers`), each row is shown as soon as its cells are extracted and
checked (`TableMaker.rows`), then the overview (written from the checked cells) and the downloads.
"Cited papers" fills the box with the ids the tab's last answer cited. Every corpus string is
escaped (`html.escape`): an abstract cannot inject markup. One table at a time per server slot,
shared with the answers (`ui.app.WebApp.slots`).

Left out: the extraction itself (`rag.table`), the chat (`ui.app`).
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag.errors import RagError
from rag.table.cells import Cell, Row
from rag.table.columns import BUILTIN, DEFAULT_COLUMNS, Column, parse_columns
from rag.table.maker import Table, TableMaker
from rag.table.overview import from_cells
from ui.state import Session

_ID = re.compile(r"^(?:title|arxiv|doi):\S+$")


def split_request(text: str) -> tuple[str | None, list[str]]:
    """(search query, paper ids) from the Compare box: ids (``title:...``, ``arxiv:...``, ``doi:...``)
    separated by commas, spaces or lines, or else a search.

    >>> split_request("title:ab12, arxiv:2406.06563"), split_request("test-time adaptation")
    ((None, ['title:ab12', 'arxiv:2406.06563']), ('test-time adaptation', []))
    """
    parts = [p for p in re.split(r"[\s,]+", text.strip()) if p]
    if parts and all(_ID.match(p) for p in parts):
        return None, parts
    return (text.strip() or None), []


def cell_html(cell: Cell) -> str:
    """One cell: its value with the evidence sentence on hover, ``not stated``, or ``⚠ unsupported`` and why."""
    if cell.value is not None:
        return (f'<td class="cell supported" title="{html.escape(cell.evidence or "", quote=True)}">'
                f"{html.escape(cell.value)}</td>")
    if cell.not_stated:
        return f'<td class="cell not-stated" title="{html.escape(cell.reason or "", quote=True)}">not stated</td>'
    return (f'<td class="cell unsupported" title="{html.escape(cell.reason or "", quote=True)}">'
            f"\u26a0 unsupported</td>")


def table_html(columns: list[Column], rows: list[Row], overview: str = "", total: int | None = None) -> str:
    """The table as HTML (rows so far; ``total`` rows expected), the overview above it."""
    head = "".join(f"<th>{html.escape(c.label)}</th>" for c in columns)
    body = "".join(f'<tr data-paper="{html.escape(r.paper.id, quote=True)}"><td>{r.number}</td>'
                   f"<td>{html.escape(r.paper.title)}</td>" + "".join(cell_html(r.cells[c.key]) for c in columns)
                   + "</tr>" for r in rows)
    waiting = f'<p class="progress">{len(rows)} of {total} rows</p>' if total is not None and len(rows) < total else ""
    lead = f'<p class="overview">{html.escape(overview)}</p>' if overview else ""
    return (f'<div id="compare-table">{lead}{waiting}<table><thead><tr><th>#</th><th>Paper</th>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


class ComparePanel:
    """The Compare handlers over the web app's answerer pool and slots."""

    def __init__(self, pool: Any, slots: threading.BoundedSemaphore, export_root: Path,
                 public: Any = str) -> None:
        self.pool, self.slots, self.export_root, self.public = pool, slots, export_root, public

    @staticmethod
    def choices() -> list[tuple[str, str]]:
        return [(c.label, c.key) for c in BUILTIN.values()]

    @staticmethod
    def cited(session: Session | None) -> str:
        """The ids the tab's last answer cited, for the Compare box."""
        if not isinstance(session, Session) or not session.conversation.turns:
            return ""
        return ", ".join(c.paper.id for c in session.conversation.turns[-1].answer.citations)

    def compare(self, request: str | None, columns: list[str] | None, question: str | None, k: Any = 10,
                session: Session | None = None) -> Iterator[tuple[str, Any, Any, Any]]:
        """Stream (table HTML, Markdown file, CSV file, BibTeX file) as rows finish."""
        none = (None, None, None)
        try:
            own = [question] if question and question.strip() else []
            chosen = parse_columns(list(columns or DEFAULT_COLUMNS), own)
            query, ids = split_request(request or "")
            maker = TableMaker(self.pool.default)
            papers, _ = maker.papers(query, ids, int(k or 10))
        except RagError as err:
            yield f'<p class="error">{html.escape(self.public(err))}</p>', *none
            return
        if not papers:
            yield '<p class="error">No paper matched: try other words, or paper ids.</p>', *none
            return
        yield table_html(chosen, [], total=len(papers)), *none
        if not self.slots.acquire(blocking=False):
            yield '<p class="progress">Waiting for a free slot (answers are being generated)…</p>', *none
            self.slots.acquire()
        rows: list[Row] = []
        try:
            for row in maker.rows(papers, chosen):
                rows.append(row)
                yield table_html(chosen, rows, total=len(papers)), *none
        finally:
            self.slots.release()
        table = Table(chosen, rows, from_cells(rows, chosen))
        yield table_html(chosen, rows, table.overview.answer), *self.files(table, session)

    def files(self, table: Table, session: Session | None) -> tuple[str, str, str]:
        from rag.chat import paper_bibtex
        from rag.table.export import to_csv, to_markdown

        folder = self.export_root / (session.id if isinstance(session, Session) else "compare")
        folder.mkdir(parents=True, exist_ok=True)
        paths = (folder / "table.md", folder / "table.csv", folder / "papers.bib")
        paths[0].write_text(to_markdown(table), encoding="utf-8")
        paths[1].write_text(to_csv(table), encoding="utf-8")
        paths[2].write_text("\n".join(paper_bibtex(r.paper) for r in table.rows), encoding="utf-8")
        return str(paths[0]), str(paths[1]), str(paths[2])


__all__ = ["ComparePanel", "cell_html", "split_request", "table_html"]
