"""The short overview above a table: 3-5 sentences that group the papers, each citing its rows.

Two ways, both checked:

- ``cells`` (the default): written from the checked cells alone, no model call. Papers that give
  the same name in a column (a dataset, a task, a method) are grouped ("ImageNet: in the data of
  “A” [1] and “B” [3]."); the results that state a number are set side by side; the columns most
  abstracts leave silent and the cells left empty are said. Every name and number in a sentence is
  copied from a cell its cited row shows, and each citation carries that cell's evidence sentence:
  such a sentence is supported by construction, so the answer check is not run again on it.
- ``model``: the configured backend writes the comparison as an answer over exactly the table's
  papers (`rag.answer.answerer.Answerer.ask`, pinned to them, keeping the rows' numbers), so it goes
  through every check an answer does (support, entailment, numbers and names withheld). It costs
  one answer's time (a prompt of every paper's best sentences), which is why it is not the default.

Left out: extracting and checking cells (`rag.table.cells`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rag.answer.claims import numbers_in
from rag.search.filters import Filters
from rag.table.cells import Cell, Row, names_in
from rag.table.columns import Column

if TYPE_CHECKING:
    from rag.answer.answerer import Answerer

MAX_SENTENCES = 5
GROUPED = ("data", "task", "method", "model_size")  # columns whose shared names group papers, in this order
OVERVIEW_QUESTION = ("How do these papers compare: which share a task, a method or data, and which report "
                     "different results?")


@dataclass
class Overview:
    answer: str = ""
    citations: list[dict[str, Any]] = field(default_factory=list)  # {number, paper_id, title, evidence: [...]}
    how: str = "cells"

    def as_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "citations": self.citations}


def _names(rows: Sequence[Row]) -> str:
    """ “Title” [n], “Title” [m] and “Title” [k] """
    refs = [f"\u201c{r.paper.title}\u201d [{r.number}]" for r in rows]
    return refs[0] if len(refs) == 1 else f"{', '.join(refs[:-1])} and {refs[-1]}"


def _spelled(name: str, values: Sequence[str]) -> str:
    """The name as a cell writes it ("imagenet" -> "ImageNet")."""
    for value in values:
        if m := re.search(rf"(?<![\w-]){re.escape(name)}(?!\w)", value, re.I):
            return m.group(0)
    return name


class Writer:
    """Collects sentences and the cells each one cites."""

    def __init__(self) -> None:
        self.sentences: list[str] = []
        self.cited: dict[int, tuple[Row, list[str]]] = {}

    def add(self, sentence: str, cells: Sequence[tuple[Row, Cell]]) -> None:
        self.sentences.append(sentence)
        for row, cell in cells:
            _, evidence = self.cited.setdefault(row.number, (row, []))
            if cell.evidence and cell.evidence not in evidence:
                evidence.append(cell.evidence)

    def overview(self) -> Overview:
        citations = [{"number": n, "paper_id": row.paper.id, "title": row.paper.title, "evidence": evidence}
                     for n, (row, evidence) in sorted(self.cited.items())]
        return Overview(" ".join(self.sentences[:MAX_SENTENCES]), citations, "cells")


def from_cells(rows: Sequence[Row], columns: Sequence[Column]) -> Overview:
    """The overview written from the checked cells (see the module's docstring)."""
    if not rows:
        return Overview("No paper matched, so there is nothing to compare.")
    out = Writer()
    by_key = {c.key: c for c in columns}
    order = [by_key[k] for k in GROUPED if k in by_key] + [c for c in columns if not c.links and c.key not in GROUPED]
    groups: list[tuple[int, Column, str, list[Row]]] = []
    for column in order:
        holders: dict[str, list[Row]] = {}
        for row in rows:
            cell = row.cells[column.key]
            for name in names_in(cell.value or ""):
                holders.setdefault(name, []).append(row)
        for name, held in holders.items():
            if len(held) >= 2 and not name.isdigit():
                groups.append((len(held), column, name, held))
    used: set[frozenset[int]] = set()
    for _, column, name, held in sorted(groups, key=lambda g: -g[0]):
        members = frozenset(r.number for r in held)
        if members in used or len(out.sentences) >= 2:
            continue
        used.add(members)
        shown = _spelled(name, [r.cells[column.key].value or "" for r in held])
        out.add(f"{shown} is named in the {column.label.lower()} of {_names(held)}.",
                [(r, r.cells[column.key]) for r in held])
    if "result" in by_key:
        numbered = [r for r in rows if r.cells["result"].value and numbers_in(r.cells["result"].value or "")][:3]
        if len(numbered) >= 2:
            parts = [f"\u201c{r.paper.title}\u201d [{r.number}] reports {(r.cells['result'].value or '').rstrip('.')}"
                     for r in numbered]
            out.add("Results differ: " + "; ".join(parts) + ".", [(r, r.cells["result"]) for r in numbered])
    if not out.sentences and len(rows) > 1:
        out.add(f"The {len(rows)} papers share no dataset, task or method name in their cells.", [])
    silent = max(columns, key=lambda c: sum(r.cells[c.key].not_stated for r in rows))
    quiet = [r for r in rows if r.cells[silent.key].not_stated]
    if quiet:
        which = ("The abstract does not" if len(rows) == 1 else "None of the abstracts" if len(quiet) == len(rows)
                 else f"{len(quiet)} of the {len(rows)} abstracts do not")
        out.add(f"{which} state the {silent.label.lower()}.", [])
    empty = sum(not c.supported for r in rows for c in r.cells.values())
    if empty:
        out.add(f"{empty} cell{'s are' if empty != 1 else ' is'} left empty because no sentence of the abstract "
                "supports what the model extracted.", [])
    return out.overview()


def from_answer(answerer: Answerer, rows: Sequence[Row], backend: str | None = None) -> Overview:
    """The overview as a checked answer over exactly the table's papers, cited by their row numbers."""
    ids = [r.paper.id for r in rows]
    numbers = {r.paper.id: r.number for r in rows}
    answer = answerer.ask(OVERVIEW_QUESTION, filters=Filters(paper_ids=frozenset(ids)), k=len(ids), pinned=ids,
                          numbers=dict(numbers), backend=backend)
    citations = [{"number": c.number, "paper_id": c.paper.id, "title": c.paper.title,
                  "evidence": [e.sentence for e in c.evidence]} for c in answer.citations]
    return Overview(answer.answer, citations, "model")


__all__ = ["OVERVIEW_QUESTION", "Overview", "from_answer", "from_cells"]
