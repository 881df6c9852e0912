"""Corpus files -> an up-to-date index: load, chunk, diff, embed, write, refresh.

``rebuild`` builds the new index aside and swaps it in when it is complete
(`rag.index.store.Store.swap_in`): a server answering questions meanwhile keeps answering from
the old index. A damaged index (nothing can read it anyway) is dropped and rebuilt in place.

Streamed: one pass over the files parses every record, writes the good ones to a
scratch file (system temp folder, deleted after) and finds which record of each paper is
kept (the last); then papers are read back, diffed against the store, chunked, embedded
and written `INGEST_BATCH` at a time and forgotten, so memory does not grow with the
corpus (kept throughout: each paper id with two numbers, and the reports of rejected and
merged records). The scratch file takes about the size of the input on disk. The
lexical index is rebuilt from the store at the end, also streamed (`rag.index.lexical`).

Idempotent: chunks whose content hash is already stored are not embedded again, a
changed abstract replaces exactly its chunks (orphans deleted), and a paper whose
metadata alone changed is updated without re-embedding. Writes are bracketed by the
store's dirty/clean generation so an interrupted ingest is detected and finished by
the next one. One ingest at a time per data home (a file lock naming its holder).

Left out: reading formats (`rag.index.corpus`), the progress display (the caller passes
``on_embedded``), the summary of what an ingest did and its report lines (`rag.ingest.ingest_summary`),
and retrieval.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rag.errors import InputError, LockedError, RecordError, StoreError
from rag.index.chunk_records import chunk_metadatas, paper_metadata
from rag.index.chunking import Chunk, Chunker
from rag.index.corpus import Paper
from rag.index.embeddings import Embedder
from rag.index.index_health import HELD_LOCKS, local_index_problem, roll_back_interrupted_write
from rag.index.injection import instruction_sentences
from rag.index.lexical import refresh_lexical
from rag.index.loaders import LoadReport, load_items
from rag.index.store import IndexIdentity, Store
from rag.index.store_errors import as_store_error
from rag.ingest.ingest_summary import IngestSummary
from rag.settings import Settings

EMBED_BATCH = 256  # chunks embedded and written per step: a crash loses at most this much work
INGEST_BATCH = 2000  # papers loaded, diffed, chunked, embedded and written at a time, then forgotten


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
    HELD_LOCKS.add((str(settings.lock_path), threading.get_ident()))  # the store's checks: no "other ingest"
    try:
        try:
            info.write_text(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')}")
        except OSError as err:
            raise as_store_error(err, settings) from None  # type: ignore[misc]
        yield
    finally:
        HELD_LOCKS.discard((str(settings.lock_path), threading.get_ident()))
        with suppress(OSError):
            info.unlink(missing_ok=True)
        lock.release()


@dataclass
class _Write:
    """One ingest's progress through the store: what it opened, checked and counted so far."""

    store: Store
    identity: IndexIdentity
    existed: bool
    began: bool = False
    to_embed: int = 0


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
        drop_ok: bool = True,
        strict: bool = False,
        on_start: Callable[[int], None] | None = None,
        on_embedded: Callable[[int], None] | None = None,
    ) -> IngestSummary:
        """Ingest ``paths`` (streamed, `INGEST_BATCH` papers at a time) or an already loaded ``report``.

        ``on_start(n)``: ``n`` chunks to embed so far (called per batch, growing); ``on_embedded(n)``:
        ``n`` more chunks embedded. ``drop_ok=False`` (``rag ingest --rebuild`` without ``--yes``): a
        rebuild that would leave out papers the index holds raises `InputError` naming how many, before
        any write."""
        started = time.perf_counter()
        summary = IngestSummary()
        with tempfile.TemporaryFile(prefix="paper-rag-ingest-") as scratch:
            kept = self._plan(paths, report, summary, scratch)
            if strict and summary.errors:
                raise InputError(
                    f"{len(summary.errors)} malformed record(s), nothing written (--strict); "
                    f"first: {summary.errors[0]}", "fix the records listed, or drop --strict to ingest the good ones")
            incoming = None if drop_ok or not rebuild else set(kept) if report is None else set(report.papers)
            self._ingest(self._batches(report, kept, scratch), rebuild, summary, on_start, on_embedded, incoming)
        summary.merged, summary.rejected = len(summary.merges), len(summary.errors)
        summary.seconds = time.perf_counter() - started
        return summary

    def _ingest(self, batches: Iterator[list[Paper]], rebuild: bool, summary: IngestSummary,
                on_start: Callable[[int], None] | None, on_embedded: Callable[[int], None] | None,
                incoming: set[str] | None = None) -> None:
        """Write the batches under the ingest lock, bracketed by a dirty/clean generation; the
        lexical index refreshed after. ``incoming``: the ids a rebuild may keep (None: no check)."""
        with ingest_lock(self.settings):
            if rebuild and incoming is not None:
                self._refuse_drop(incoming)
            if not rebuild:
                with suppress(StoreError):  # an unreachable store is reported by the write itself
                    self.store.clean_leftovers()
            target = self.store
            if rebuild and self._can_build_aside():
                target = self.store.aside()
            elif rebuild:
                self.store.drop()
            identity = IndexIdentity(self.embedder.name, self.settings.chunking.version)
            existed = target.exists()
            if existed:
                target.check_identity(identity)
            # a "dirty-" generation: an earlier ingest died after writing; close it even if nothing is left to do
            interrupted = existed and target.generation().startswith("dirty-")
            write = _Write(target, identity, existed)
            for papers in batches:
                self._write_batch(write, papers, summary, on_start, on_embedded)
            if write.began or interrupted or not target.exists():
                self._begin(write, embeds=False)
                target.end_write()
            if target is not self.store:
                self.store.swap_in(target)
            index = refresh_lexical(self.store, self.settings)
            summary.papers_total, summary.chunks_total = len(index.papers), len(index)
            index.close()

    def _plan(self, paths: Iterable[str | Path] | None, report: LoadReport | None,
              summary: IngestSummary, scratch: IO[bytes]) -> dict[str, int]:
        """Read every record once: the good ones go to ``scratch`` (pickled, in order), and what is
        kept in memory is which record of each paper wins (the last: ``{paper id: its position
        among the good records}``); rejected and merged records go into ``summary``. Raises
        `CorpusError` on an unreadable file, before any write."""
        if report is not None:
            summary.errors, summary.merges = list(report.errors), list(report.merged)
            return {}
        sources: dict[str, int] = {}
        kept: dict[str, int] = {}
        origin: dict[str, int] = {}  # paper id -> the file of its record kept so far, as a number in `sources`
        position = 0
        for item in load_items(paths or []):
            if isinstance(item, RecordError):
                summary.errors.append(item)
                continue
            if item.id in kept:
                summary.merges.append((item.id, _name(sources, origin[item.id]), item.source or "?"))
            kept[item.id], origin[item.id] = position, sources.setdefault(item.source or "?", len(sources))
            pickle.dump(item, scratch, protocol=pickle.HIGHEST_PROTOCOL)
            position += 1
        scratch.seek(0)
        return kept

    def _batches(self, report: LoadReport | None, kept: dict[str, int], scratch: IO[bytes]) -> Iterator[list[Paper]]:
        """The papers to write, `INGEST_BATCH` at a time, each id once (its last record, at its
        place), read back from ``scratch``: parsing (LaTeX decoding above all) is paid once."""
        if report is not None:
            papers = list(report.papers.values())
            for start in range(0, len(papers), INGEST_BATCH):
                yield papers[start:start + INGEST_BATCH]
            return
        batch: list[Paper] = []
        position = 0
        while True:
            try:
                item: Paper = pickle.load(scratch)  # noqa: S301 - our own file, written above
            except EOFError:
                break
            if kept[item.id] == position:
                batch.append(item)
            position += 1
            if len(batch) >= INGEST_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    def _write_batch(self, write: _Write, papers: list[Paper], summary: IngestSummary,
                     on_start: Callable[[int], None] | None, on_embedded: Callable[[int], None] | None) -> None:
        """Chunk, diff against the store, embed and write one batch of papers."""
        store, cfg = write.store, self.settings.chunking
        chunks = Chunker(self.embedder, cfg.max_tokens, cfg.include_title).chunk(papers)
        by_paper: dict[str, list[Chunk]] = {}
        for chunk in chunks:
            by_paper.setdefault(chunk.paper_id, []).append(chunk)
        stored = store.hashes_for([p.id for p in papers]) if write.existed or write.began else {}

        to_embed: list[Chunk] = []
        meta_only: list[Chunk] = []
        orphans: list[str] = []
        metas: dict[str, dict[str, object]] = {}
        for paper in papers:
            summary.instructions += [(paper.id, sentence) for text in (paper.title, paper.abstract)
                                     for sentence in instruction_sentences(text)]
            mine, have = by_paper[paper.id], dict(stored.get(paper.id, {}))
            have_record = have.pop("paper", None)
            fresh = [c for c in mine if have.get(c.id) != c.hash]
            gone = [cid for cid in have if cid not in {c.id for c in mine}]
            record_changed = have_record != paper_metadata(paper, " ".join(c.text for c in mine)) or (
                have and len(have) != len(mine))
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
            metas.update((c.id, m) for c, m in zip(mine, chunk_metadatas(mine, paper)))
            to_embed += fresh
            meta_only += [c for c in mine if c not in fresh]  # start, n_chunks or the record may have changed
            orphans += gone
        if not (to_embed or meta_only or orphans):
            return
        self._begin(write, embeds=bool(to_embed))
        write.to_embed += len(to_embed)
        if on_start:
            on_start(write.to_embed)
        for start in range(0, len(to_embed), EMBED_BATCH):
            part = to_embed[start:start + EMBED_BATCH]
            vectors = self.embedder.encode([c.embed_text for c in part], on_batch=on_embedded, load_onnx=False)
            store.upsert(part, vectors, [metas[c.id] for c in part])
        if meta_only:
            store.update_metadata([c.id for c in meta_only], [metas[c.id] for c in meta_only])
        store.delete(orphans)
        summary.chunks_embedded += len(to_embed)
        summary.chunks_deleted += len(orphans)

    def _begin(self, write: _Write, embeds: bool) -> None:
        """Open the write (collection created, generation dirty) once; record the vector
        dimension (loading the model) only once something is embedded."""
        store = write.store
        if embeds and write.identity.dim is None:
            write.identity = IndexIdentity(write.identity.embedder, write.identity.chunker, self.embedder.dim)
            if write.existed:
                store.check_identity(write.identity)
            if write.began:
                store.begin_write(write.identity)
        if not write.began:
            store.collection(create=True)
            store.begin_write(write.identity)
            write.began = True

    def _refuse_drop(self, incoming: set[str]) -> None:
        """`InputError` when a rebuild from papers ``incoming`` would drop papers the index holds
        (an index that cannot be read has nothing to keep)."""
        try:
            if not self.store.exists():
                return
            index = refresh_lexical(self.store, self.settings)
        except StoreError:
            return
        try:
            have = len(index.papers)
            dropped = sum(1 for pid in index.papers if pid not in incoming)
        finally:
            index.close()
        if dropped:
            raise InputError(f"--rebuild from these files would drop {dropped:,} of the {have:,} papers in the index "
                             f"(the files hold {len(incoming):,} papers); nothing was changed",
                             "add --yes to rebuild from these files anyway, or name every corpus file of the index "
                             "(a plain `rag ingest FILE` adds and updates papers without dropping any)")

    def _can_build_aside(self) -> bool:
        """Whether a rebuild can keep the current index readable: it exists and is not damaged.

        Also removes what an interrupted rebuild left behind (we hold the ingest lock)."""
        store = self.store
        if not self.settings.store.chroma_url:
            problem = local_index_problem(self.settings)
            if problem is not None and problem.journal:  # an interrupted write, not damage: roll it back
                roll_back_interrupted_write(self.settings)
                problem = local_index_problem(self.settings)
            if problem is not None:
                return False
        try:
            store.clean_leftovers()
            return store.exists()
        except StoreError:  # unreadable in some other way: drop it, as before
            return False


def _name(sources: dict[str, int], number: int) -> str:
    return next(name for name, n in sources.items() if n == number)


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


__all__ = ["Ingestor", "ingest_lock", "stats", "StoreError"]
