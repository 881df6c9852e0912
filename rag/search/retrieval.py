"""Query -> ranked papers: dense (Chroma) + lexical (BM25) retrieval, fused and grouped.

Both retrievers return chunks; each paper is scored by its best chunk in each list, and
the two paper scores are fused (`rag.search.ranking`: ``weighted``, ``rrf`` or one retriever
alone, a bonus for the method names the query quotes, optional MMR). Metadata filters
(`rag.search.filters`) limit both retrievers. The result carries the evidence a caller needs to
decide that nothing relevant was found (`Confidence`).

The lexical index is loaded once per process and reloaded only when the store's
generation changes, which is how a long-lived process sees papers that another process
ingested. A search that finds the collection gone under it (a ``rag ingest --rebuild``
swapped in a new one) reopens the index and runs once more, so readers never see a
rebuild as an error; Chroma chunks the lexical index does not know yet (written since it
was loaded) are left out until the next reload. One `Retriever` may be shared by threads: the
reload happens under its lock, once, while the other threads wait for it. Several retrievers of
one data home in a process (a second reader, a test) replace Chroma's per-path client cache one at a
time.
Left out: prompting and answering (`rag.answer.answerer`), the fusion arithmetic (`rag.search.ranking`) and
what a filter lets through (`rag.search.filters`).
"""

from __future__ import annotations

import threading
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rag.errors import EmptyIndexError, IndexBusyError, InputError
from rag.index.chunking import paper_of
from rag.index.corpus import Paper, clean_text
from rag.index.embeddings import Embedder
from rag.index.lexical import LexicalIndex, refresh_lexical
from rag.index.store import IndexIdentity, Store
from rag.search.filters import Filters, allowed_ids
from rag.search.ranking import fuse, mmr, name_bonus, query_names
from rag.settings import Settings

MAX_QUERY_CHARS = 2000  # far past what the embedder (256 word pieces) and BM25 can use
SCORE_SCALE = ("the ranking score, comparable within one search only: weighted fusion (the default) is 0-1, 1 "
               "meaning the best candidate of both the dense and the BM25 retriever, plus up to 0.2 (name_bonus) for "
               "a paper that contains every method name the query quotes, so a top paper can score up to 1.2; rrf "
               "gives about 0.01-0.03, dense the cosine similarity, lexical the raw BM25 score")
IN_FILTER_LIMIT = 5000  # above this many allowed papers, filter after retrieval instead of in Chroma
_CHROMA_SWAP = threading.Lock()  # one replacement of Chroma's per-path system cache at a time, process-wide


@dataclass
class ChunkHit:
    chunk_id: str
    text: str
    dense: float | None = None    # cosine similarity
    lexical: float | None = None  # BM25 score


@dataclass
class PaperHit:
    paper: Paper
    score: float                    # fused score: what the ranking used
    dense: float | None             # best chunk cosine similarity (None: not in the dense candidates)
    lexical: float | None           # best chunk BM25 score (None: not in the lexical candidates)
    dense_rank: int | None
    lexical_rank: int | None
    chunks: list[ChunkHit] = field(default_factory=list)
    name_bonus: float = 0.0         # part of ``score`` for quoting the query's method names (see SCORE_SCALE)

    def as_dict(self) -> dict[str, Any]:
        return {"paper_id": self.paper.id, "title": self.paper.title, "score": round(self.score, 6),
                "name_bonus": round(self.name_bonus, 6),
                "dense": self.dense, "lexical": self.lexical, "dense_rank": self.dense_rank,
                "lexical_rank": self.lexical_rank, "year": self.paper.year, "authors": self.paper.authors,
                "links": self.paper.links, "snippet": self.chunks[0].text if self.chunks else ""}


@dataclass
class Confidence:
    """Evidence that something relevant was found, for abstention."""

    dense_top: float       # best cosine similarity of any chunk
    lexical_top: float     # best BM25 score of any chunk
    coverage: float        # share of the query's content terms found in the top paper (0..1)
    agree: bool            # the dense and lexical retrievers rank the same paper first

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def low_confidence(dense_top: Any, coverage: Any, threshold: float, min_coverage: float) -> Any:
    """The calibrated abstention rule: the best passage is far from the query (cosine below
    ``threshold``) and the top paper holds few of its terms (share below ``min_coverage``).
    `rag.answer.answerer.Answerer.should_abstain` applies it to one `Confidence`; `eval.metrics` to numpy arrays.

    >>> low_confidence(0.2, 0.1, 0.3, 0.5), low_confidence(0.2, 0.9, 0.3, 0.5)
    (True, False)
    """
    return (dense_top < threshold) & (coverage < min_coverage)


@dataclass
class SearchResult:
    query: str
    hits: list[PaperHit]
    confidence: Confidence
    notices: list[str] = field(default_factory=list)
    empty_because: str | None = None  # the filter that removed every paper
    timings: dict[str, float] = field(default_factory=dict)


_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"})  # format chars: zero-width, BOM, ...
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")  # fillers and a blank that render as nothing


def visible(text: str) -> bool:
    """Whether ``text`` has a character that shows: not only spaces, zero-width and format
    characters (U+200B, U+2060, U+FEFF, soft hyphens...), combining marks or blank fillers.

    >>> visible("\u200b\u200d\ufeff\u2060 \u00ad"), visible("\u200bBERT")
    (False, True)
    """
    return any(ch not in _BLANK_LETTERS and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES for ch in text)


def clean_query(query: str, noun: Literal["query", "question"] = "query") -> tuple[str, list[str]]:
    """(text, notices): stripped, control characters dropped; raises `InputError` if nothing is left.

    A query longer than ``MAX_QUERY_CHARS`` is truncated with a notice; a ``question`` (what
    `rag.answer.answerer` answers) is refused instead, since an answer to part of a question misleads.

    >>> clean_query("  a\tquery ")
    ('a query', [])
    """
    text = clean_text(query)
    if not visible(text):  # nothing, or only zero-width / invisible characters
        fix = "type a question about the papers" if noun == "question" else "type a question or some keywords"
        raise InputError(f"the {noun} is empty", fix)
    if noun == "question" and len(text) > MAX_QUERY_CHARS:
        raise InputError(f"the question is {len(text):,} characters long (limit {MAX_QUERY_CHARS:,})",
                         "ask a shorter question; put long text in a corpus file instead")
    notices = []
    if len(text) > MAX_QUERY_CHARS:
        notices.append(f"query truncated from {len(text):,} to {MAX_QUERY_CHARS:,} characters")
        text = text[:MAX_QUERY_CHARS]
    return text, notices

class Retriever:
    """Hybrid retrieval over one data home or Chroma server. Keep one per process."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None, store: Store | None = None,
                 refresh_interval_s: float = 1.0) -> None:
        self.settings = settings
        self.embedder = embedder or Embedder(settings.embedding)
        self.store = store or Store(settings)
        self.refresh_interval_s = refresh_interval_s
        self._index: LexicalIndex | None = None
        self._stamp: Any = None
        self._checked_at = 0.0
        self._lock = threading.RLock()  # one reload at a time; searches read the index it leaves

    # ---------------------------------------------------------- freshness

    def _local_stamp(self) -> Any:
        path: Path = self.store.generation_file
        try:
            st = path.stat()
            return (st.st_mtime_ns, st.st_size, path.read_text())
        except OSError:  # missing, or RAG_HOME is not a readable folder: the store says why
            return None

    def index(self) -> LexicalIndex:
        """The lexical index, reloaded if another process (or a server client) wrote since."""
        with self._lock:
            return self._current_index()

    def refresh(self) -> LexicalIndex:
        """The lexical index, checked for new papers now (after an upload) rather than within ``refresh_interval_s``."""
        with self._lock:
            self._checked_at = float("-inf")
            return self._current_index()

    def _current_index(self) -> LexicalIndex:
        now = time.monotonic()
        if self._index is not None and now - self._checked_at < self.refresh_interval_s:
            return self._index
        self._checked_at = now
        if self.settings.store.chroma_url:
            stamp = self.store.generation() if self.store.exists() else None
        else:
            stamp = self._local_stamp()
        if self._index is None or stamp != self._stamp:
            if self._index is not None and not self.settings.store.chroma_url:
                self.store = Store(self.settings, client=_fresh_local_client(self.settings))
            elif self._index is not None:  # the same server; drop the handle of a collection a rebuild replaced
                self.store = Store(self.settings, client=self.store.client)
            if not self.store.exists():
                raise EmptyIndexError(f"no index at {self.store.location}: nothing has been ingested yet")
            identity = self.store.identity()
            if identity is not None:
                self.store.check_identity(IndexIdentity(self.embedder.name, identity.chunker, identity.dim))
            self._index = refresh_lexical(self.store, self.settings)
            self._stamp = stamp
        return self._index

    # ---------------------------------------------------------- search

    def reopen(self) -> None:
        """Forget the open index so that the next `index` call opens it afresh."""
        with self._lock:
            self._stamp, self._checked_at = object(), float("-inf")

    def search(self, query: str, k: int | None = None, filters: Filters | None = None,
               fusion: str | None = None, dense_weight: float | None = None) -> SearchResult:
        """Ranked papers for ``query``; reopens the index and retries once if it was swapped under us."""
        try:
            return self._search(query, k, filters, fusion, dense_weight)
        except Exception as err:
            if not _index_vanished(err):
                raise
            self.reopen()
            return self._search(query, k, filters, fusion, dense_weight)

    def _search(self, query: str, k: int | None, filters: Filters | None, fusion: str | None,
                dense_weight: float | None) -> SearchResult:
        cfg = self.settings.retrieval
        k, fusion = k or cfg.k, fusion or cfg.fusion
        weight = cfg.dense_weight if dense_weight is None else dense_weight
        query, notices = clean_query(query)
        t0 = time.perf_counter()
        index = self.index()
        allowed, empty_because = self._allowed(index, filters, notices)
        if allowed is not None and not allowed:
            return SearchResult(query, [], Confidence(0.0, 0.0, 0.0, False), notices, empty_because)

        t1 = time.perf_counter()
        vector = self.embedder.encode_query(query)
        t2 = time.perf_counter()
        dense_chunks = self._dense(vector, cfg.candidates, allowed) if fusion != "lexical" else []
        t3 = time.perf_counter()
        mask = index.mask(allowed) if allowed is not None else None
        lexical_chunks = index.search(query, cfg.candidates, mask) if fusion != "dense" else []
        t4 = time.perf_counter()

        chunks: dict[str, ChunkHit] = {}
        dense_paper: dict[str, float] = {}
        lexical_paper: dict[str, float] = {}
        texts = index.texts([cid for cid, _ in dense_chunks + lexical_chunks])
        dense_chunks = [(cid, score) for cid, score in dense_chunks if cid in texts]  # written since it loaded
        for cid, score in dense_chunks:
            pid = paper_of(cid)
            chunks.setdefault(cid, ChunkHit(cid, texts[cid])).dense = score
            dense_paper[pid] = max(dense_paper.get(pid, -1.0), score)
        for cid, score in lexical_chunks:
            pid = paper_of(cid)
            chunks.setdefault(cid, ChunkHit(cid, texts[cid])).lexical = score
            lexical_paper[pid] = max(lexical_paper.get(pid, 0.0), score)

        fused = base = fuse(dense_paper, lexical_paper, fusion, weight, cfg.rrf_k)
        if fusion in ("weighted", "rrf"):
            fused = name_bonus(fused, index.papers, query_names(query))
        order = sorted(fused, key=lambda p: (-fused[p], p))
        if cfg.mmr_lambda is not None:
            order = mmr(order, self._paper_vectors(order[: 4 * k]), fused, k, cfg.mmr_lambda)
        d_rank = {p: i for i, p in enumerate(sorted(dense_paper, key=dense_paper.__getitem__, reverse=True), 1)}
        l_rank = {p: i for i, p in enumerate(sorted(lexical_paper, key=lexical_paper.__getitem__, reverse=True), 1)}
        by_paper: dict[str, list[ChunkHit]] = {}
        for hit in chunks.values():
            by_paper.setdefault(paper_of(hit.chunk_id), []).append(hit)
        hits = []
        for pid in order[:k]:
            best = sorted(by_paper.get(pid, []), key=lambda c: -(max(c.dense or 0, 0) + (c.lexical or 0) / 100))
            hits.append(PaperHit(index.papers[pid], fused[pid], dense_paper.get(pid), lexical_paper.get(pid),
                                 d_rank.get(pid), l_rank.get(pid), best[: cfg.chunks_per_paper],
                                 fused[pid] - base[pid]))
        confidence = self._confidence(index, query, hits, dense_chunks, lexical_chunks, d_rank, l_rank)
        timings = {"filter_s": t1 - t0, "embed_s": t2 - t1, "dense_s": t3 - t2, "lexical_s": t4 - t3,
                   "fuse_s": time.perf_counter() - t4, "total_s": time.perf_counter() - t0}
        return SearchResult(query, hits, confidence, notices, None, timings)

    def _dense(self, vector: np.ndarray, n: int, allowed: set[str] | None) -> list[tuple[str, float]]:
        if allowed is None:
            return self.store.query(vector, n)
        if len(allowed) <= IN_FILTER_LIMIT:
            return self.store.query(vector, n, where={"paper_id": {"$in": sorted(allowed)}})
        return [(c, s) for c, s in self.store.query(vector, n * 4) if paper_of(c) in allowed][:n]

    def _paper_vectors(self, paper_ids: Iterable[str]) -> dict[str, np.ndarray]:
        ids = [f"{p}#0" for p in paper_ids]
        got = self.store.collection().get(ids=ids, include=["embeddings"])
        return {paper_of(cid): np.asarray(v) for cid, v in zip(got["ids"], got["embeddings"])}

    def _allowed(self, index: LexicalIndex, filters: Filters | None,
                 notices: list[str] | None = None) -> tuple[set[str] | None, str | None]:
        return allowed_ids(index.papers, filters, notices)

    def _confidence(self, index: LexicalIndex, query: str, hits: list[PaperHit],
                    dense_chunks: list[tuple[str, float]], lexical_chunks: list[tuple[str, float]],
                    d_rank: dict[str, int], l_rank: dict[str, int]) -> Confidence:
        coverage = 0.0
        if hits:
            terms = set(index.terms(query))
            paper = hits[0].paper
            text = set(index.terms(paper.title + " " + paper.abstract))
            coverage = len(terms & text) / len(terms) if terms else 0.0
        top_d = min(d_rank, key=d_rank.__getitem__) if d_rank else None
        top_l = min(l_rank, key=l_rank.__getitem__) if l_rank else None
        return Confidence(
            dense_top=max((s for _, s in dense_chunks), default=0.0),
            lexical_top=max((s for _, s in lexical_chunks), default=0.0),
            coverage=round(coverage, 4),
            agree=top_d is not None and top_d == top_l,
        )


def _index_vanished(err: BaseException) -> bool:
    """Whether ``err`` says the collection went away under a reader (a rebuild's swap), not real trouble."""
    if isinstance(err, EmptyIndexError | IndexBusyError):
        return True
    return type(err).__name__ == "NotFoundError" or "does not exist" in str(err)


def _fresh_local_client(settings: Settings) -> Any:
    """A new embedded client that re-reads the database. Chroma caches one system per path for the
    whole process: a retriever creating its client while another clears that cache finds none
    (``KeyError: '<home>/chroma'``), so the swaps take turns."""
    from chromadb.api.shared_system_client import SharedSystemClient

    from rag.index.chroma_client import make_client

    with _CHROMA_SWAP:
        SharedSystemClient.clear_system_cache()
        return make_client(settings)
