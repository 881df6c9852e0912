"""An extraction table over the library: papers as rows, questions as columns, every cell checked.

    >>> maker = TableMaker(Answerer(Settings()))                                 # doctest: +SKIP
    >>> table = maker.make("test-time adaptation", columns=parse_columns("task,data"), k=5)  # doctest: +SKIP
    >>> table.as_dict()["rows"][0]["cells"]["data"]                               # doctest: +SKIP
    {'value': 'CIFAR-10-C and ImageNet-C', 'evidence': 'We evaluate on ...', 'supported': True, ...}

Rows are the papers given by id (`rag.index.paper_names.resolve_paper`), then those a search returns (with its
filters), at most ``k`` in all. Each row's cells are extracted one column at a time from that
paper's abstract alone (`rag.table.cells`), the abstract first in the prompt so that its KV cache
serves every column, and read from the cell cache when the paper's content, the column and the
model are unchanged (`rag.table.cache`). Rows are yielded as they finish (`TableMaker.rows`), for
a progress bar or a streamed table. The JSON (`Table.as_dict`) is
``{"columns", "rows": [{"paper_id", "title", "cells": {COLUMN: {"value", "evidence", "supported",
"not_stated", "reason"}}}], "overview": {"answer", "citations"}}``.

Left out: printing and exporting (`rag.table.export`), the overview's wording (`rag.table.overview`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag.answer import prompts
from rag.answer.answerer import Answerer, number_papers
from rag.errors import BackendError, InputError
from rag.index.corpus import Paper
from rag.index.paper_names import resolve_paper
from rag.llm import Backend, generates
from rag.search.filters import Filters
from rag.settings import Settings
from rag.table import cells as cellmod
from rag.table.cache import FILE_NAME, CellCache, content_hash
from rag.table.cells import Cell, Row
from rag.table.columns import Column
from rag.table.overview import Overview, from_answer, from_cells

DEFAULT_ROWS = 10
MAX_ROWS = 50
OVERVIEWS = ("cells", "model", "none")
PROMPT = "\n".join([prompts.TABLE_SYSTEM_PROMPT, prompts.TABLE_ABSTRACT_TEMPLATE, prompts.CELL_INSTRUCTION])
LINKS_RULE = "links: URLs in the abstract's sentences v1"  # what a `code` cell depends on instead of a prompt
ABSTRACT_ROOM = 200  # prompt tokens kept for the system prompt's tail, the question and the reply's template


@dataclass
class Table:
    columns: list[Column]
    rows: list[Row]
    overview: Overview = field(default_factory=Overview)
    query: str | None = None
    model: str = ""
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"columns": [c.key for c in self.columns], "rows": [r.as_dict() for r in self.rows],
                "overview": self.overview.as_dict()}


def model_key(llm: Backend) -> str:
    """The model a cached cell came from."""
    return f"{llm.name}:{llm.model}" if generates(llm) else "extractive"


class TableMaker:
    """Tables over one index, with one answerer's backend, embedder and support check."""

    def __init__(self, answerer: Answerer, cache: CellCache | None = None) -> None:
        self.answerer = answerer
        self.settings: Settings = answerer.settings
        self.cache = cache if cache is not None else CellCache(self.settings.home / FILE_NAME)  # an empty one is falsy
        # a cached cell holds its verdict: it is reused only under the same check and threshold
        self.check_rules = f"{cellmod.CHECK_RULES}; support_threshold={self.settings.answer.support_threshold}"

    # ---------------------------------------------------------- rows

    def papers(self, query: str | None = None, paper_ids: Sequence[str] = (), k: int | None = None,
               filters: Filters | None = None) -> tuple[list[Paper], list[str]]:
        """(the rows' papers, notes): the given ids first, then the search's papers, ``k`` in all."""
        limit = k or DEFAULT_ROWS
        if not 1 <= limit <= MAX_ROWS:
            raise InputError(f"k={limit} is out of range", f"ask for 1 to {MAX_ROWS} papers")
        query = (query or "").strip() or None
        if query is None and not paper_ids:
            raise InputError("no papers to compare", "give a search query, or paper ids with --papers ID ...")
        known = self.answerer.retriever.index().papers
        chosen = list({p.id: p for p in (resolve_paper(known, pid) for pid in paper_ids)}.values())
        notes: list[str] = []
        if query is not None and len(chosen) < limit:
            result = self.answerer.retriever.search(query, k=limit, filters=filters)
            notes += result.notices
            if result.empty_because and not chosen:
                notes.append(f"no paper matched: {result.empty_because}")
            have = {p.id for p in chosen}
            chosen += [h.paper for h in result.hits if h.paper.id not in have][: limit - len(chosen)]
        return chosen[: max(limit, len(paper_ids))], notes

    def rows(self, papers: Sequence[Paper], columns: Sequence[Column], backend: str | None = None,
             on_cell: Callable[[Cell], None] | None = None, numbers: Mapping[str, int] | None = None) -> Iterator[Row]:
        """Each paper's row once all its cells are extracted and checked (or read from the cache), numbered
        1, 2, ... or, given a conversation's citation ``numbers``, as its answers number papers
        (`rag.answer.answerer.number_papers`: a paper cited earlier keeps its number)."""
        llm, _ = self.answerer.backend_for(backend)
        model = model_key(llm)
        delimiter = f"SOURCE-{secrets.token_hex(4)}"
        for number, paper in zip(number_papers([p.id for p in papers], numbers), papers, strict=True):
            block: str | None = None
            row: dict[str, Cell] = {}
            for column in columns:
                key = column.fingerprint(LINKS_RULE if column.links else f"{PROMPT}\n{self.check_rules}")
                cached = self.cache.get(content_hash(paper), key, "-" if column.links else model)
                if cached is not None:
                    cell = Cell.from_record(cached)
                else:
                    started = time.perf_counter()
                    if block is None and generates(llm):
                        block = cellmod.abstract_prompt(paper, delimiter, self._fits(llm))
                    cell, keep = self._extract(paper, column, llm, block)
                    cell.seconds = time.perf_counter() - started
                    if keep:
                        self.cache.put(content_hash(paper), key, "-" if column.links else model, cell.record())
                row[column.key] = cell
                if on_cell is not None:
                    on_cell(cell)
            yield Row(number, paper, row)

    @staticmethod
    def _fits(llm: Backend) -> Callable[[str], bool]:
        room = llm.prompt_budget - llm.count_tokens(prompts.TABLE_SYSTEM_PROMPT) - ABSTRACT_ROOM
        return lambda text: llm.count_tokens(text) <= room

    def _extract(self, paper: Paper, column: Column, llm: Backend, block: str | None) -> tuple[Cell, bool]:
        """(the checked cell, whether to cache it: a failed call is not)."""
        support = self.answerer.support
        if column.links:
            return cellmod.link_cell(paper), True
        try:
            value = cellmod.ask(llm, block or "", column) if generates(llm) else \
                cellmod.extractive_value(paper, column, support)
        except BackendError as err:
            return Cell(None, None, False, False, f"the model failed: {err}"), False
        if value is None:
            return cellmod.not_stated("the model found that the abstract does not state it" if generates(llm)
                                      else "no sentence of the abstract matches the question"), True
        return cellmod.check_value(value, paper, column, support), True

    # ---------------------------------------------------------- the table

    def make(self, query: str | None = None, paper_ids: Sequence[str] = (), columns: Sequence[Column] = (),
             k: int | None = None, filters: Filters | None = None, backend: str | None = None,
             overview: str = "cells", on_row: Callable[[Row], None] | None = None,
             on_cell: Callable[[Cell], None] | None = None,
             on_papers: Callable[[list[Paper]], None] | None = None,
             numbers: Mapping[str, int] | None = None) -> Table:
        """The whole table: papers, rows (``on_row`` called as each finishes; numbered as `rows` says),
        then the overview."""
        if overview not in OVERVIEWS:
            raise InputError(f"unknown overview {overview!r}", f"use one of {', '.join(OVERVIEWS)}")
        if not columns:
            raise InputError("no columns", "name built-in columns or ask --column \"QUESTION\"")
        started = time.perf_counter()
        papers, notes = self.papers(query, paper_ids, k, filters)
        if on_papers is not None:
            on_papers(papers)
        llm, backend_notes = self.answerer.backend_for(backend)
        table = Table(list(columns), [], query=query, model=model_key(llm), notes=[*notes, *backend_notes])
        for row in self.rows(papers, columns, backend, on_cell, numbers):
            table.rows.append(row)
            if on_row is not None:
                on_row(row)
        table.timings["cells_s"] = time.perf_counter() - started
        if overview == "model" and table.rows:
            table.overview = from_answer(self.answerer, table.rows, backend)
        elif overview == "cells":
            table.overview = from_cells(table.rows, table.columns)
        table.timings["total_s"] = time.perf_counter() - started
        return table


__all__ = ["DEFAULT_ROWS", "MAX_ROWS", "OVERVIEWS", "Row", "Table", "TableMaker", "model_key"]
