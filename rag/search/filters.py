"""Metadata filters -> the paper ids they let through, and why none did.

`Filters` holds the year range, author, category and paper ids a search is limited to (a
reversed year range is an `InputError` with its fix); `allowed_ids` applies them to the
papers of the catalogue in one pass each, and when nothing is left says which filter
emptied the result and how many papers have that field at all (`field_count`). One source
for `rag.search.retrieval.Retriever.search` and `rag.library` (``rag similar``, ``rag papers list``).
Left out: the search itself (`rag.search.retrieval`) and how filters are read from a command line,
a form or a request (each interface).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rag.errors import InputError
from rag.index.corpus import Paper, fold


@dataclass(frozen=True)
class Filters:
    """Metadata filters; every given one must hold. Years are inclusive."""

    year_from: int | None = None
    year_to: int | None = None
    author: str | None = None
    category: str | None = None
    paper_ids: frozenset[str] | None = None

    def __post_init__(self) -> None:
        """A reversed range matches nothing: it is a mistake, said with its fix in every interface."""
        if self.year_from is not None and self.year_to is not None and self.year_from > self.year_to:
            raise InputError(f"the year range {self.year_from}..{self.year_to} runs backwards and matches no paper",
                             f"give the earlier year first: {self.year_to}..{self.year_from}")

    @classmethod
    def parse_years(cls, text: str) -> tuple[int | None, int | None]:
        """``"2023..2025"`` -> (2023, 2025); ``"2024"`` -> (2024, 2024); ``"..2020"`` -> (None, 2020)."""
        text = text.strip()
        if ".." not in text:
            year = int(text)
            return year, year
        lo, hi = text.split("..", 1)
        return (int(lo) if lo else None), (int(hi) if hi else None)

    def checks(self) -> list[tuple[str, Any]]:
        """(description, predicate) for each active filter."""
        return [(description, predicate) for _, description, predicate in self.field_checks()]

    def field_checks(self) -> list[tuple[str | None, str, Any]]:
        """(field the filter needs: ``year``, ``authors``, ``categories`` or None, description, predicate)."""
        out: list[tuple[str | None, str, Any]] = []
        if self.year_from is not None or self.year_to is not None:
            lo, hi = self.year_from or -10**9, self.year_to or 10**9
            out.append(("year", f"year {self.year_from or ''}..{self.year_to or ''}",
                        lambda p: p.year is not None and lo <= p.year <= hi))
        if self.author:  # case- and accent-insensitive: "scholkopf" finds "Schölkopf"
            needle = fold(self.author)
            out.append(("authors", f"author {self.author!r}", lambda p: any(needle in fold(a) for a in p.authors)))
        if self.category:
            cat = self.category.casefold()
            out.append(("categories", f"category {self.category!r}",
                        lambda p: any(cat == c.casefold() for c in p.categories)))
        if self.paper_ids is not None:
            ids = self.paper_ids
            out.append((None, f"paper ids ({len(ids)})", lambda p: p.id in ids))
        return out


FIELD_NAMES = {"year": "a year", "authors": "authors", "categories": "categories"}


def has_field(paper: Paper, name: str) -> bool:
    return paper.year is not None if name == "year" else bool(getattr(paper, name))


def field_count(papers: Iterable[Paper], name: str) -> str:
    """How many papers have field ``name``, as a reader wants it said.

    >>> field_count([Paper(title="a", abstract="x", year=2019), Paper(title="b", abstract="y")], "year")
    '1 of 2 papers have a year (2019)'
    >>> field_count([Paper(title="a", abstract="x")], "year")
    'no paper in the index has a year'
    """
    papers = list(papers)
    having = [p for p in papers if has_field(p, name)]
    if not having:
        return f"no paper in the index has {FIELD_NAMES[name]}"
    text = f"{len(having)} of {len(papers)} papers have {FIELD_NAMES[name]}"
    if name == "year":
        lo, hi = min(p.year for p in having), max(p.year for p in having)  # type: ignore[type-var]
        text += f" ({lo}–{hi})" if lo != hi else f" ({lo})"
    return text


def allowed_ids(papers: Mapping[str, Paper], filters: Filters | None,
                notices: list[str] | None = None) -> tuple[set[str] | None, str | None]:
    """The paper ids every filter lets through (None: no filter), and why none did.

    A filter on a field some papers lack says so: an empty result names how many papers have
    the field at all, and ``notices`` gets how many a year filter left out for having no year.
    One source for `Retriever.search` and `rag.library` (``rag similar``, ``rag papers list``)."""
    if filters is None or not filters.checks():
        return None, None
    allowed: set[str] | None = None
    for name, description, predicate in filters.field_checks():
        allowed = passing(papers, predicate, allowed)
        if not allowed:
            if name is None:
                return allowed, f"no paper matches the filter {description}"
            count = field_count(papers.values(), name)
            joiner = ": " if count.startswith("no paper") else "; "
            return allowed, f"no paper matches the filter {description}{joiner}{count}"
        if name == "year" and notices is not None:
            missing = sum(1 for p in papers.values() if p.year is None)
            if missing:
                notices.append(f"{missing} of {len(papers)} papers have no year and were left out by the "
                               f"filter {description}")
    return allowed, None

def passing(papers: Mapping[str, Paper], predicate: Callable[[Paper], bool], within: set[str] | None) -> set[str]:
    """Ids of the papers ``predicate`` accepts among ``within`` (None: all), in one pass over the catalogue."""
    return {pid for pid, paper in papers.items() if (within is None or pid in within) and predicate(paper)}
