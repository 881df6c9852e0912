"""A table as people read it: Markdown, CSV and the terminal (rich), from `rag.table.maker.Table`.

Every format shows the same cells: the value, ``not stated``, or ``⚠ unsupported`` with its reason
(never the rejected value); Markdown and CSV also carry each cell's evidence sentence. Corpus text is
escaped for Markdown (`rag.markup.md_text`; a ``|`` cannot end a cell early).

`with_notes` puts the table's notes above its Markdown (a chat's table message, a table turn in a
conversation's export); `column_labels` reads a table's columns back from that Markdown. Left out:
JSON (`Table.as_dict`) and extracting the cells.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from rag.markup import md_text
from rag.table.cells import Cell
from rag.table.maker import Table

HEAD = ("#", "Paper")  # the first columns of every Markdown table
_HEADER = re.compile(r"^\| # \| Paper \| (.+) \|$", re.M)


def _md(text: object) -> str:
    return md_text(text).replace("|", "\\|").replace("\n", " ")


def cell_text(cell: Cell) -> str:
    """What a cell shows: its value, ``not stated``, or ``⚠ unsupported``."""
    return cell.mark


def status(cell: Cell) -> str:
    return "supported" if cell.value is not None else ("not stated" if cell.not_stated else
                                                       f"unsupported: {cell.reason or ''}".rstrip(": "))


def to_markdown(table: Table) -> str:
    """The overview, the table (row number and title, then a column per question), then each row's
    evidence sentences and the reasons for empty cells."""
    head = [*HEAD, *(c.label for c in table.columns)]
    lines = [_md(table.overview.answer), ""] if table.overview.answer else []
    lines += ["| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
    for row in table.rows:
        values = [_md(cell_text(row.cells[c.key])) for c in table.columns]
        lines.append(f"| {row.number} | {_md(row.paper.title)} | " + " | ".join(values) + " |")
    notes = []
    for row in table.rows:
        for column in table.columns:
            cell = row.cells[column.key]
            if cell.value is not None and cell.evidence:
                notes.append(f"- [{row.number}] {_md(column.label)}: \u201c{_md(cell.evidence)}\u201d")
            elif not cell.supported:
                notes.append(f"- [{row.number}] {_md(column.label)}: \u26a0 {_md(cell.reason or 'unsupported')}")
    if notes:
        lines += ["", "**Evidence**", "", *notes]
    return "\n".join(lines) + "\n"


def with_notes(table: Table) -> str:
    """The notes (how each named paper was found), then the table as ``rag table --md`` writes it: a
    chat's table message (the API's) and a table turn in a conversation's export."""
    notes = "".join(f"*Note:* {md_text(note)}\n\n" for note in table.notes)
    return notes + to_markdown(table)


def column_labels(markdown: str) -> list[str] | None:
    """The column labels of the table `to_markdown` wrote into ``markdown`` (None: it holds none):
    how a table comes back from a chat client's history (`ui.service.PaperService.replay`).

    >>> column_labels("Intro.\\n\\n| # | Paper | Data | Main result |\\n|---|---|---|---|\\n| 1 | A | x | y |")
    ['Data', 'Main result']
    """
    found = _HEADER.search(markdown)
    if found is None:
        return None
    return [re.sub(r"\\(.)", r"\1", label.strip()) for label in re.split(r"(?<!\\)\|", found.group(1))]


def to_csv(table: Table) -> str:
    """One line per paper: number, id, title, then per column its value, status and evidence."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["number", "paper_id", "title",
                     *(f"{c.key}{part}" for c in table.columns for part in ("", " status", " evidence"))])
    for row in table.rows:
        cells: list[Any] = []
        for column in table.columns:
            cell = row.cells[column.key]
            cells += [cell.value or "", status(cell), cell.evidence or ""]
        writer.writerow([row.number, row.paper.id, row.paper.title, *cells])
    return buffer.getvalue()


def to_rich(table: Table) -> Any:
    """A rich table for the terminal: values, ``not stated`` dimmed, ``⚠ unsupported`` in yellow."""
    from rich.table import Table as RichTable
    from rich.text import Text

    out = RichTable("#", "Paper", *(c.label for c in table.columns), show_lines=True)
    for row in table.rows:
        shown = []
        for column in table.columns:
            cell = row.cells[column.key]
            style = "" if cell.value is not None else ("dim" if cell.not_stated else "yellow")
            shown.append(Text(cell_text(cell), style=style))
        out.add_row(str(row.number), Text(row.paper.title, style="bold"), *shown)
    return out


__all__ = ["HEAD", "cell_text", "column_labels", "status", "to_csv", "to_markdown", "to_rich", "with_notes"]
