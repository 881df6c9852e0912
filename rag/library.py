"""The papers in the index as a library: list, show, remove, and papers similar to one.

- `list_papers` / `get_paper`: the catalogue the lexical index keeps (rebuilt from Chroma when
  stale), with the filters of ``rag search`` and each paper's chunk count;
- `similar_papers`: nearest papers by the *stored* vectors, nothing re-embedded: the mean of
  the paper's chunk vectors (normalised) is one Chroma query, answered chunks are grouped by
  paper (best cosine), the paper itself and papers outside the filters are left out in Chroma's
  ``where``. Results are `rag.search.retrieval.PaperHit` (``dense`` = ``score`` = cosine), so they
  print as ``rag search`` results do;
- `remove_papers`: deletes the papers' chunks under the ingest lock, bracketed by a dirty/clean
  generation like an ingest, then rebuilds the lexical index. The new generation is what
  running readers (`rag.search.retrieval.Retriever.index`) compare against, so a server that was
  already running stops returning the papers within its refresh interval (one second).
  An id that is not there refuses the whole call: nothing is removed (as ``git rm`` does).

Left out: adding papers (`rag.ingest.ingestor`), printing (`rag.cli`), and undo (re-ingest the file).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag.errors import EmptyIndexError, InputError, PaperNotFoundError
from rag.index.chunking import paper_of
from rag.index.corpus import Paper
from rag.index.lexical import LexicalIndex, refresh_lexical
from rag.index.paper_names import resolve_paper
from rag.index.store import Store
from rag.ingest.ingestor import ingest_lock
from rag.search.filters import Filters, allowed_ids
from rag.search.retrieval import IN_FILTER_LIMIT, ChunkHit, PaperHit, Retriever
from rag.settings import Settings


@dataclass
class SimilarResult:
    paper: Paper
    hits: list[PaperHit]
    empty_because: str | None = None  # the filter that left no other paper
    notices: list[str] = field(default_factory=list)  # what the filters left out, as `rag search` says it

    def as_dict(self) -> dict[str, Any]:
        return {"paper_id": self.paper.id, "title": self.paper.title, "results": [h.as_dict() for h in self.hits],
                "notices": self.notices, "empty_because": self.empty_because}


@dataclass
class Removal:
    removed: list[str]
    titles: list[str]
    chunks_deleted: int
    papers_left: int
    generation: str
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ------------------------------------------------------------------ the catalogue


def catalogue(settings: Settings) -> LexicalIndex:
    """The index's papers and chunks (no embedding model loaded); `EmptyIndexError` before any ingest."""
    store = Store(settings)
    if not store.exists():
        raise EmptyIndexError(f"no index at {store.location}: nothing has been ingested yet")
    return refresh_lexical(store, settings)


def chunk_counts(index: LexicalIndex) -> dict[str, int]:
    return index.catalogue.chunk_counts()


def allowed_papers(papers: Mapping[str, Paper], filters: Filters | None,
                   notices: list[str] | None = None) -> tuple[set[str] | None, str | None]:
    """(ids passing every filter or None when no filter is set, the filter that left none), with the
    notes `rag search` gives (`rag.search.filters.allowed_ids`) added to ``notices``."""
    return allowed_ids(papers, filters, notices)


def list_papers(index: LexicalIndex, filters: Filters | None = None) -> list[Paper]:
    """Papers passing ``filters``, newest first, then by title."""
    allowed, _ = allowed_papers(index.papers, filters)
    papers = [p for pid, p in index.papers.items() if allowed is None or pid in allowed]
    return sorted(papers, key=lambda p: (-(p.year or 0), p.title.casefold(), p.id))


def get_paper(index: LexicalIndex, paper_id: str) -> Paper:
    """`resolve_paper` over the index's catalogue."""
    return resolve_paper(index.papers, paper_id)


def paper_summary(paper: Paper, chunks: int | None = None) -> dict[str, Any]:
    """One line of ``rag papers list --json``: the record without its abstract, plus links and chunks."""
    data = {k: v for k, v in paper.to_dict().items() if k not in ("abstract", "source", "id")}
    return {"paper_id": paper.id, **data, "links": paper.links, "chunks": chunks}


# ------------------------------------------------------------------ similar papers


def paper_vector(store: Store, paper_id: str) -> np.ndarray:
    """The normalised mean of the paper's stored chunk vectors."""
    got = store.collection().get(where={"paper_id": paper_id}, include=["embeddings"])
    vectors = np.asarray(got["embeddings"], dtype=np.float32)
    if not len(vectors):
        raise PaperNotFoundError(f"the paper {paper_id!r} has no stored vectors",
                                 "run `rag ingest` again on its file, or `rag ingest --rebuild PATH`")
    mean = vectors.mean(axis=0)
    return mean / (np.linalg.norm(mean) or 1.0)


def similar_papers(retriever: Retriever, paper_id: str, k: int = 5, filters: Filters | None = None) -> SimilarResult:
    """The ``k`` papers nearest to ``paper_id`` by stored vectors, best first, the paper itself excluded.

    Raises `PaperNotFoundError` for an id that is not in the index."""
    if k < 1:
        raise InputError(f"k={k} is below 1", "ask for at least one paper")
    index = retriever.index()  # refreshes the store client too when another process wrote
    paper = get_paper(index, paper_id)
    paper_id = paper.id
    notices: list[str] = []
    allowed, empty_because = allowed_papers(index.papers, filters, notices)
    if allowed is not None:
        allowed.discard(paper_id)
        if not allowed:
            return SimilarResult(paper, [], empty_because or "no other paper matches the filters", notices)
    store = retriever.store
    vector = paper_vector(store, paper_id)
    n = max(retriever.settings.retrieval.candidates, 4 * k)
    if allowed is not None and len(allowed) <= IN_FILTER_LIMIT:
        rows = store.query(vector, n, where={"paper_id": {"$in": sorted(allowed)}})
    else:
        rows = store.query(vector, n * (4 if allowed is not None else 1), where={"paper_id": {"$ne": paper_id}})
    best: dict[str, tuple[str, float]] = {}
    for cid, score in rows:
        pid = paper_of(cid)
        if pid in index.papers and (allowed is None or pid in allowed) and pid not in best:
            best[pid] = (cid, score)  # rows come best first: the first chunk of a paper is its best
    order = sorted(best, key=lambda p: (-best[p][1], p))[:k]
    hits = [PaperHit(index.papers[pid], best[pid][1], best[pid][1], None, rank, None,
                     [ChunkHit(best[pid][0], index.text(best[pid][0]), dense=best[pid][1])])
            for rank, pid in enumerate(order, 1)]
    return SimilarResult(paper, hits, notices=notices)


# ------------------------------------------------------------------ removing


def remove_papers(settings: Settings, paper_ids: Iterable[str], store: Store | None = None) -> Removal:
    """Delete the papers' chunks from Chroma and the lexical index; a new generation tells readers.

    Every id must be in the index, else `PaperNotFoundError` and nothing is removed."""
    given = [pid.strip() for pid in paper_ids if pid.strip()]
    if not given:
        raise InputError("no paper id given", "name the papers to remove: `rag papers rm ID...`")
    papers = catalogue(settings).papers
    ids = list(dict.fromkeys(_resolved(papers, pid) for pid in given))
    with ingest_lock(settings):
        store = store or Store(settings)
        if not store.exists():
            raise EmptyIndexError(f"no index at {store.location}: nothing has been ingested yet")
        stored = store.hashes_for(ids)
        missing = [pid for pid in ids if pid not in stored]
        if missing:
            raise PaperNotFoundError(f"not in the index: {', '.join(missing)} (nothing removed)",
                                     "check the ids with `rag papers list`; an id already removed is not there")
        titles = [_title(stored_record) for stored_record in (stored[pid].get("paper", "") for pid in ids)]
        chunk_ids = [cid for pid in ids for cid in stored[pid] if cid != "paper"]
        identity = store.identity()
        if identity is not None:
            store.begin_write(identity)
        else:
            store.set_metadata(generation=f"dirty-{uuid.uuid4().hex}")
        store.delete(chunk_ids)
        generation = store.end_write()
        index = refresh_lexical(store, settings, force=True)
    return Removal(ids, titles, len(chunk_ids), len(index.papers), generation)


def _resolved(papers: Mapping[str, Paper], given: str) -> str:
    """The id ``given`` resolves to, or ``given`` itself when it names no paper (reported with the others)."""
    try:
        return resolve_paper(papers, given).id
    except PaperNotFoundError:
        return given


def _title(record: str) -> str:
    try:
        return str(json.loads(record).get("title", ""))
    except (ValueError, AttributeError):
        return ""


__all__ = ["Removal", "SimilarResult", "allowed_papers", "catalogue", "chunk_counts", "get_paper", "list_papers",
           "paper_summary", "remove_papers", "resolve_paper", "similar_papers"]
