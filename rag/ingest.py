"""Corpus files -> an up-to-date index: load, chunk, diff, embed, write, refresh.

``rebuild`` builds the new index aside and swaps it in when it is complete
(`rag.store.Store.swap_in`): a server answering questions meanwhile keeps answering from
the old index. A damaged index (nothing can read it anyway) is dropped and rebuilt in place.

Idempotent: chunks whose content hash is already stored are not embedded again, a
changed abstract replaces exactly its chunks (orphans deleted), and a paper whose
metadata alone changed is updated without re-embedding. Writes are bracketed by the
store's dirty/clean generation so an interrupted ingest is detected and finished by
the next one. One ingest at a time per data home (a file lock naming its holder).

Left out: reading formats (`rag.corpus`), the progress display (the caller passes
``on_embedded``), and retrieval.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from rag.chunking import Chunk, Chunker
from rag.corpus import LoadReport, Paper, load_paths
from rag.embeddings import Embedder
from rag.errors import InputError, LockedError, RecordError, StoreError
from rag.lexical import refresh_lexical
from rag.settings import Settings
from rag.store import IndexIdentity, Store, as_store_error, chunk_metadata, local_index_problem, paper_metadata

EMBED_BATCH = 256  # chunks embedded and written per step: a crash loses at most this much work


SHOWN = 10  # repeated report lines of one kind shown before "... and N more"


@dataclass
class IngestSummary:
    """What one ingest did. ``updated`` = ``changed`` (text, re-embedded) + ``metadata_only``
    (authors, year, source file...: no embedding)."""

    new: int = 0
    updated: int = 0
    changed: int = 0
    metadata_only: int = 0
    unchanged: int = 0
    merged: int = 0
    rejected: int = 0
    chunks_embedded: int = 0
    chunks_deleted: int = 0
    papers_total: int = 0
    chunks_total: int = 0
    seconds: float = 0.0
    errors: list[RecordError] = field(default_factory=list)
    merges: list[tuple[str, str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k not in ("errors", "merges")} | {
            "errors": [str(e) for e in self.errors],
            "merges": [list(m) for m in self.merges],
        }


@contextmanager
def ingest_lock(settings: Settings) -> Iterator[None]:
    """Exclusive per data home; waits ``lock_timeout_s`` then names the holder."""
    from filelock import FileLock, Timeout

    info = settings.lock_path.with_suffix(".holder")
    lock = FileLock(str(settings.lock_path))
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=settings.store.lock_timeout_s)
    except Timeout:
        try:
            holder = info.read_text() or "unknown process"
        except OSError:
            holder = "unknown process"
        raise LockedError(f"another ingest is writing to {settings.home} ({holder})") from None
    except OSError as err:  # read-only or full disk, RAG_HOME under a file
        raise as_store_error(err, settings) from None  # type: ignore[misc]
    try:
        try:
            info.write_text(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')}")
        except OSError as err:
            raise as_store_error(err, settings) from None  # type: ignore[misc]
        yield
    finally:
        with suppress(OSError):
            info.unlink(missing_ok=True)
        lock.release()


class Ingestor:
    """Runs one ingest. ``embedder`` can be shared to avoid reloading the model."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None, store: Store | None = None) -> None:
        self.settings = settings
        self.embedder = embedder or Embedder(settings.embedding)
        self.store = store or Store(settings)

    def run(
        self,
        paths: Iterable[str | Path] | None = None,
        *,
        report: LoadReport | None = None,
        rebuild: bool = False,
        strict: bool = False,
        on_start: Callable[[int], None] | None = None,
        on_embedded: Callable[[int], None] | None = None,
    ) -> IngestSummary:
        started = time.perf_counter()
        if report is None:
            report = load_paths(paths or [])
        if strict and report.errors:
            raise InputError(
                f"{len(report.errors)} malformed record(s), nothing written (--strict); first: {report.errors[0]}",
                "fix the records listed, or drop --strict to ingest the good ones")
        summary = IngestSummary(merged=len(report.merged), rejected=len(report.errors),
                                errors=report.errors, merges=report.merged)
        with ingest_lock(self.settings):
            if not rebuild:
                with suppress(StoreError):  # an unreachable store is reported by the write itself
                    self.store.clean_leftovers()
            self._write(list(report.papers.values()), summary, rebuild, on_start, on_embedded)
        summary.seconds = time.perf_counter() - started
        return summary

    def _write(self, papers: list[Paper], summary: IngestSummary, rebuild: bool,
               on_start: Callable[[int], None] | None, on_embedded: Callable[[int], None] | None) -> None:
        store, identity = self.store, IndexIdentity(self.embedder.name, self.settings.chunking.version)
        if rebuild and self._can_build_aside():
            aside = store.aside()
            Ingestor(self.settings, self.embedder, aside)._write(papers, summary, False, on_start, on_embedded)
            store.swap_in(aside)
            return
        if rebuild:
            store.drop()
        elif store.exists():
            store.check_identity(identity)
        cfg = self.settings.chunking
        chunks = Chunker(self.embedder, cfg.max_tokens, cfg.include_title).chunk(papers)
        by_paper: dict[str, list[Chunk]] = {}
        for chunk in chunks:
            by_paper.setdefault(chunk.paper_id, []).append(chunk)
        stored = store.hashes_for([p.id for p in papers]) if store.exists() else {}

        to_embed: list[tuple[Chunk, Paper]] = []
        meta_only: list[tuple[Chunk, Paper]] = []
        orphans: list[str] = []
        for paper in papers:
            mine, have = by_paper[paper.id], dict(stored.get(paper.id, {}))
            have_record = have.pop("paper", None)
            fresh = [c for c in mine if have.get(c.id) != c.hash]
            gone = [cid for cid in have if cid not in {c.id for c in mine}]
            record_changed = have_record != paper_metadata(paper) or (have and len(have) != len(mine))
            if not have:
                summary.new += 1
            elif fresh or gone or len(have) != len(mine):
                summary.updated += 1
                summary.changed += 1
            elif record_changed:
                summary.updated += 1
                summary.metadata_only += 1
            else:
                summary.unchanged += 1
                continue
            to_embed += [(c, paper) for c in fresh]
            meta_only += [(c, paper) for c in mine if c not in fresh]  # n_chunks / record may have changed
            orphans += gone

        # a "dirty-" generation: an earlier ingest died after writing; close it even if nothing is left to do
        interrupted = store.exists() and store.generation().startswith("dirty-")
        if to_embed or meta_only or orphans or interrupted or not store.exists():
            embedded = self._embed_and_write(to_embed, by_paper, identity, on_start, on_embedded)
            if meta_only:
                store.update_metadata([c.id for c, _ in meta_only],
                                      [chunk_metadata(c, p, len(by_paper[p.id])) for c, p in meta_only])
            store.delete(orphans)
            store.end_write()
            summary.chunks_embedded, summary.chunks_deleted = embedded, len(orphans)
        index = refresh_lexical(store, self.settings)
        summary.papers_total, summary.chunks_total = len(index.papers), len(index)

    def _can_build_aside(self) -> bool:
        """Whether a rebuild can keep the current index readable: it exists and is not damaged.

        Also removes what an interrupted rebuild left behind (we hold the ingest lock)."""
        store = self.store
        if not self.settings.store.chroma_url and local_index_problem(self.settings) is not None:
            return False
        try:
            store.clean_leftovers()
            return store.exists()
        except StoreError:  # unreadable in some other way: drop it, as before
            return False

    def _embed_and_write(self, items: list[tuple[Chunk, Paper]], by_paper: dict[str, list[Chunk]],
                         identity: IndexIdentity, on_start: Callable[[int], None] | None,
                         on_embedded: Callable[[int], None] | None) -> int:
        store = self.store
        if items:
            identity = IndexIdentity(identity.embedder, identity.chunker, self.embedder.dim)
            if store.exists():
                store.check_identity(identity)
        store.collection(create=True)
        store.begin_write(identity)
        if on_start:
            on_start(len(items))
        for start in range(0, len(items), EMBED_BATCH):
            batch = items[start:start + EMBED_BATCH]
            vectors = self.embedder.encode([c.embed_text for c, _ in batch], on_batch=on_embedded)
            store.upsert([c for c, _ in batch], vectors,
                         [chunk_metadata(c, p, len(by_paper[p.id])) for c, p in batch])
        return len(items)


def stats(settings: Settings) -> dict[str, object]:
    """Counts and identity of the index, for ``rag stats``."""
    store = Store(settings)
    if not store.exists():
        return {"papers": 0, "chunks": 0, "store": store.location, "embedder": None, "ingested": False}
    index = refresh_lexical(store, settings)
    meta = store.metadata()
    return {
        "papers": len(index.papers),
        "chunks": store.count(),
        "embedder": meta.get("embedder"),
        "dim": meta.get("dim"),
        "chunker": meta.get("chunker"),
        "store": store.location,
        "home": str(settings.home),
        "size_on_disk_bytes": store.size_on_disk(),
        "generation": meta.get("generation"),
        "ingested": True,
    }


def summary_lines(summary: IngestSummary, where: str) -> list[str]:
    """The three lines `rag ingest` and the web upload print; ``where``: the data home, as shown to this reader.

    >>> summary_lines(IngestSummary(new=1, changed=2, metadata_only=13, unchanged=4), "/data")[0]
    'papers: 1 new, 2 changed, 13 metadata only, 4 unchanged, 0 merged, 0 rejected'
    """
    rate = summary.chunks_embedded / summary.seconds if summary.seconds else 0
    return [f"papers: {summary.new} new, {summary.changed} changed, {summary.metadata_only} metadata only, "
            f"{summary.unchanged} unchanged, {summary.merged} merged, {summary.rejected} rejected",
            f"chunks: {summary.chunks_embedded} embedded ({rate:.1f}/s), {summary.chunks_deleted} deleted",
            f"index: {summary.papers_total} papers, {summary.chunks_total} chunks in {where} ({summary.seconds:.1f}s)"]


def record_lines(summary: IngestSummary, shown: int = SHOWN) -> list[tuple[str, str]]:
    """("rejected" | "merged" | "more", text) for the records worth a line, each kind summarised
    after ``shown`` lines: a file with one paper a million times prints ten "merged" lines and a count.

    >>> s = IngestSummary(merged=3, merges=[("p", "f:1", "f:2"), ("p", "f:2", "f:3"), ("p", "f:3", "f:4")])
    >>> record_lines(s, shown=1)
    [('merged', 'p: f:1 -> f:2 (later record kept)'), ('more', '... and 2 more merged records (later record kept)')]
    """
    out: list[tuple[str, str]] = [("rejected", err.user_message()) for err in summary.errors[:shown]]
    if len(summary.errors) > shown:
        out.append(("more", f"... and {len(summary.errors) - shown:,} more rejected records"))
    out += [("merged", f"{pid}: {a} -> {b} (later record kept)") for pid, a, b in summary.merges[:shown]]
    if len(summary.merges) > shown:
        out.append(("more", f"... and {len(summary.merges) - shown:,} more merged records (later record kept)"))
    return out


def summary_json(summary: IngestSummary) -> str:
    return json.dumps(summary.as_dict(), indent=2)


__all__ = ["Ingestor", "IngestSummary", "ingest_lock", "record_lines", "stats", "StoreError",
           "summary_lines"]
