"""The paper a name names: `resolve_paper` reads an id, an arXiv id, a DOI or an exact title against the
index's papers. Every command and route that takes a paper id goes through it (``rag papers show``,
``rag table --papers``, a chat's table request, the API's ``/v1/papers/ID``).

It stands apart from `rag.library` (which re-exports it) because it only reads: the chat's table
turns (`rag.chat`, the read path) name papers too, and `rag.library` imports the write path. Left
out: searching for a name that is no paper's (`rag.table.chat.named_papers`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from rag.errors import InputError, PaperNotFoundError
from rag.index.corpus import Paper, normalise_arxiv_id, normalise_doi, normalise_title

_ARXIV_URL = re.compile(r"^(?:https?://)?(?:www\.)?arxiv\.org/(?:abs|pdf)/", re.I)


def resolve_paper(papers: Mapping[str, Paper], given: str) -> Paper:
    """The paper ``given`` names: its id, its arXiv id (``2406.06563``, ``arXiv:2406.06563v2``, an
    arxiv.org link), its DOI (``10.1/x``, a doi.org link) or its exact title (case, accents and
    punctuation aside). Every command and route that takes a paper id goes through here.

    A title two papers share is an `InputError` listing their ids; nothing found is a
    `PaperNotFoundError`. Ids and arXiv ids are looked up directly; a DOI or a title reads the
    catalogue once."""
    text = " ".join(str(given).split())
    if not text:
        raise InputError("no paper given", "name a paper by id, exact title, arXiv id or DOI")
    if text in papers:
        return papers[text]
    arxiv = normalise_arxiv_id(_ARXIV_URL.sub("", text).removesuffix(".pdf"))
    if arxiv and f"arxiv:{arxiv}" in papers:
        return papers[f"arxiv:{arxiv}"]
    doi = normalise_doi(text.removeprefix("doi:").removeprefix("DOI:"))
    if doi and f"doi:{doi}" in papers:
        return papers[f"doi:{doi}"]
    title = normalise_title(text)
    found = [p for p in papers.values() if (doi and p.doi == doi) or (arxiv and p.arxiv_id == arxiv)
             or (title and normalise_title(p.title) == title)]
    if len({p.id for p in found}) > 1:
        raise InputError(f"{len(found)} papers are titled {text!r}: {', '.join(p.id for p in found)}",
                         "give one of their ids")
    if not found:
        raise PaperNotFoundError(f"no paper with id {text!r} in the index (nor with that exact title, arXiv id "
                                 "or DOI)")
    return found[0]


__all__ = ["resolve_paper"]
