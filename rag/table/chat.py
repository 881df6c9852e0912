"""The table a chat message asks for, made the same way for every chat interface: `requested_table`.

The web chat, ``rag ask`` / ``rag chat`` and the API's chat completions each read the message
with `rag.table.requests.table_request`; when it asks for a table they call `requested_table`
and show what it returns as they show a table (`ui.compare`'s HTML, `rag.table.terminal`,
`rag.table.export.to_markdown`), then record it as a turn of the conversation
(`rag.chat.Conversation.add_table`: in its Markdown export, its BibTeX, and what a follow-up
refers to). Rows are, in this order:

- "them", "these papers": the papers the conversation's last turn cited, or the rows of its last
  table (``cited``);
- papers named in the message: an id, exact title, arXiv id or DOI names a paper as in ``rag
  table --papers`` (`rag.index.paper_names.resolve_paper`); any other name ("CoTTA") is the best paper of
  a search for it, said in a note ("“CoTTA”: the best match is “Continual Test-Time Domain
  Adaptation” (title:...)"), or left out with a note when nothing is close (the answers' own
  abstention rule, `rag.answer.answerer.Answerer.should_abstain`);
- else the papers a search for the request's topic returns (``k``, filters), as ``rag table QUERY``,
  unless nothing is close to the topic (the abstention rule again): that is an `InputError`.

Columns are those the message names, else the default ones; the overview is written from the
cells (no model call). Rows are numbered as the conversation numbers citations (``numbers``).
Left out: reading the message (`rag.table.requests`), showing the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rag.answer.answerer import Answerer
from rag.errors import InputError, PaperNotFoundError
from rag.index.paper_names import resolve_paper
from rag.search.filters import Filters
from rag.table.maker import Table, TableMaker
from rag.table.requests import TableRequest

NAME_CANDIDATES = 5  # papers a name's (or a topic's) check search ranks: the name bonus needs a few to tell apart
EXAMPLE = 'name the papers (ids or exact titles: `rag papers list`) or a topic, e.g. "make a table of test-time ' \
          'adaptation papers"'


def named_papers(answerer: Answerer, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the ids of the papers ``names`` name, a note for each name a search had to settle)."""
    known = answerer.retriever.index().papers
    ids: list[str] = []
    notes: list[str] = []
    for name in names:
        try:
            ids.append(resolve_paper(known, name).id)
            continue
        except PaperNotFoundError:
            pass
        result = answerer.retriever.search(name, k=NAME_CANDIDATES)
        far, _ = answerer.should_abstain(result)
        if far:
            notes.append(f"no paper in the index matches \u201c{name}\u201d: left out")
            continue
        best = result.hits[0].paper
        ids.append(best.id)
        notes.append(f"\u201c{name}\u201d: the best match is \u201c{best.title}\u201d ({best.id})")
    return list(dict.fromkeys(ids)), notes


def last_cited(conversation: Any) -> list[str]:
    """The ids of the papers a `rag.chat.Conversation`'s last turn cited, or the rows of its last table
    (none before its first turn)."""
    turns = getattr(conversation, "turns", None) or []
    return [c.paper.id for c in turns[-1].answer.citations] if turns else []


def in_conversation(conversation: Any) -> dict[str, Any]:
    """`requested_table`'s ``cited`` and ``numbers`` for a table asked for in a `rag.chat.Conversation`."""
    return {"cited": last_cited(conversation), "numbers": dict(conversation.numbers)}


def requested_table(maker: TableMaker, request: TableRequest, *, cited: Sequence[str] = (),
                    numbers: Mapping[str, int] | None = None, k: int | None = None,
                    filters: Filters | None = None, backend: str | None = None,
                    on_papers: Callable[[list[Any]], None] | None = None, on_row: Callable[[Any], None] | None = None,
                    on_cell: Callable[[Any], None] | None = None) -> Table:
    """The table ``request`` asks for (`TableMaker.make`, its hooks called as rows finish); the notes
    say how names were settled. ``cited``: the papers "them" means; ``numbers``: the conversation's
    citation numbers, which the rows take (`rag.chat.Conversation.add_table` records the table as a
    turn). ``k``: rows for a topic when the request gives none. Nothing to put in the table is an
    `InputError` saying what to ask instead."""
    columns = request.chosen_columns()
    notes: list[str] = []
    if request.earlier:
        if not cited:
            raise InputError("no earlier answer cited papers to put in a table", EXAMPLE)
        ids = list(cited)
    else:
        ids, notes = named_papers(maker.answerer, request.papers)
        if not ids and not request.query:
            raise InputError(f"no paper in the index matches {', '.join(request.papers)}" if request.papers
                             else "the message names no papers and no topic for a table", EXAMPLE)
    rows = request.k or (None if ids and not request.query else k)
    if request.query and not ids:  # nothing close: said, as an answer abstains, rather than a table of strangers
        nearest = maker.answerer.retriever.search(request.query, k=NAME_CANDIDATES, filters=filters)
        far, why = maker.answerer.should_abstain(nearest)
        if far:
            raise InputError(f"no paper in the index is close to \u201c{request.query}\u201d ({why})", EXAMPLE)
    table = maker.make(request.query, ids, columns, rows, filters, backend, on_papers=on_papers, on_row=on_row,
                       on_cell=on_cell, numbers=numbers)
    table.notes[:0] = notes
    return table


__all__ = ["NAME_CANDIDATES", "in_conversation", "last_cited", "named_papers", "requested_table"]
