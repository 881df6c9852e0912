"""The local side index: a bm25s lexical index plus the paper catalogue, both on disk.

Chroma is the source of truth. This index is a cache of it, kept in
``$RAG_HOME/lexical/<collection>/`` and stamped with the collection's *generation*:
built at ingest time, opened once per process, and rebuilt from Chroma whenever its
stamp differs from the collection's (after an ingest by another process, an
interrupted ingest, or damaged files). It is never rebuilt per query.

It holds what retrieval needs besides vectors: BM25 over each chunk's embedded text
(title + sentences, English stop words removed, Snowball-stemmed; `rag.index.bm25_writer`, opened
memory-mapped), and the catalogue (`rag.index.catalogue`: the papers, abstracts rebuilt from their
chunks, and each chunk's place in its abstract, in SQLite). A reader keeps neither in memory:
memory stays flat in corpus size, and so does building, which streams Chroma's chunks a page at a
time through a scratch table (sorted there by paper) into both. Left out: dense retrieval and
fusion (`rag.search.retrieval`).

bm25s is imported without numba (`bm25s_module`): paper-rag scores with bm25s's numpy code and
writes its own index, yet bm25s imports numba whenever it is installed (67 MB and 0.5-2 s in
every process that searches).

`refresh_lexical` is the one way to get the index for a store: the saved one while its stamp
matches, else rebuilt from the store's chunks (ingest, removal and retrieval all call it).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.index.bm25_writer import BM25Writer
from rag.index.catalogue import FILE, Catalogue, CatalogueWriter, Papers
from rag.index.chunk_records import unpack_record

if TYPE_CHECKING:
    from rag.index.store import Store
    from rag.settings import Settings

log = logging.getLogger(__name__)

FORMAT = 2
TOKENIZE_BATCH = 2000  # chunk texts tokenized and written to the BM25 index at a time


def stemmer() -> Any:
    """A new Snowball stemmer: one per call, since PyStemmer objects are not thread-safe and
    making one is cheap (well under a microsecond)."""
    import Stemmer

    return Stemmer.Stemmer("english")


def bm25s_module() -> Any:
    """bm25s, imported (the first time) with numba hidden, so that bm25s does not load it.

    bm25s imports numba when it can, for its numba retrieval backend and ``activate_numba_scorer``;
    paper-rag uses neither (``get_scores`` is numpy, `rag.index.bm25_writer` builds the index), and numba
    with llvmlite costs 67 MB and 0.5-2 s of import in every ``rag ask``, ``rag search`` and ``rag
    serve``. Scores are the same: without numba bm25s runs the same numpy code. A process that
    imported numba already (an evaluation, through ranx) keeps it."""
    if "bm25s" not in sys.modules and "numba" not in sys.modules:
        sys.modules["numba"] = None  # type: ignore[assignment]  # `import numba` raises ImportError
        try:
            import bm25s
        finally:
            del sys.modules["numba"]
    import bm25s

    return bm25s


def tokenize(texts: Sequence[str], stemmer: Any) -> list[list[str]]:
    """bm25s's tokenizer (lower-case words, English stop words out) then stemming."""
    bm25s = bm25s_module()
    return bm25s.tokenize(list(texts), stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)


def _chunk_text(document: str | None, meta: dict[str, Any], abstract: str | None) -> str:
    """A chunk's text: Chroma's document (indexes written before text was stored once), else its
    slice of the paper's abstract (``start`` and ``length`` in the chunk's metadata)."""
    if document is not None:
        return document
    start = int(meta.get("start", 0))
    return (abstract or "")[start:start + int(meta.get("length", 0))]


class LexicalIndex:
    """BM25 over chunks (memory-mapped), and the catalogue of chunks and papers (SQLite), in ``folder``."""

    def __init__(self, folder: Path, generation: str) -> None:
        bm25s = bm25s_module()
        self.folder, self.generation = folder, generation
        self.catalogue = Catalogue(folder / FILE)
        self.papers: Papers = self.catalogue.papers
        self.bm25: Any = None
        if self.catalogue.n_chunks:
            self.bm25 = bm25s.BM25.load(str(folder / "bm25"), mmap=True)
            if self.bm25.scores["num_docs"] != self.catalogue.n_chunks:
                raise ValueError("bm25 document count differs from the catalogue")

    # ---------------------------------------------------------- building

    @classmethod
    def build(cls, rows: Iterable[tuple[str, str | None, dict[str, Any]]], generation: str, folder: Path,
              include_title: bool = True) -> LexicalIndex:
        """From Chroma rows (chunk id, document, metadata), as `Store.iter_chunks` yields them, into
        ``folder`` (replaced); a page of rows and one paper at a time in memory."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        scratch = sqlite3.connect(str(folder / "scratch.sqlite3"))
        scratch.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; "
                              "CREATE TABLE raw (pid TEXT, idx INTEGER, id TEXT, doc TEXT, meta TEXT)")
        scratch.executemany("INSERT INTO raw VALUES (?, ?, ?, ?, ?)",
                            ((m["paper_id"], int(m.get("chunk", 0)), cid, doc, json.dumps(m, ensure_ascii=False))
                             for cid, doc, m in rows))
        scratch.execute("CREATE INDEX by_paper ON raw (pid, idx)")
        writer, bm25 = CatalogueWriter(folder / FILE), BM25Writer(folder / "bm25")
        stem, pending = stemmer(), list[str]()

        def flush() -> None:
            bm25.add(tokenize(pending, stem))
            pending.clear()

        def paper(pid: str, parts: list[tuple[str, str | None, dict[str, Any]]]) -> None:
            head = parts[0][2]
            packed = unpack_record(head)
            record = json.loads(packed) if packed else {"title": head.get("title", "")}
            texts = [(cid, _chunk_text(doc, meta, record.get("abstract"))) for cid, doc, meta in parts]
            writer.add(pid, record, texts)
            title = record.get("title") or head.get("title", "")
            pending.extend(f"{title}. {text}" if include_title else text for _, text in texts)
            if len(pending) >= TOKENIZE_BATCH:
                flush()

        current: str | None = None
        parts: list[tuple[str, str | None, dict[str, Any]]] = []
        for pid, cid, doc, meta in scratch.execute("SELECT pid, id, doc, meta FROM raw ORDER BY pid, idx"):
            if pid != current and parts:
                paper(current, parts)  # type: ignore[arg-type]
                parts = []
            current = pid
            parts.append((cid, doc, json.loads(meta)))
        if parts:
            paper(current, parts)  # type: ignore[arg-type]
        if pending:
            flush()
        scratch.close()
        (folder / "scratch.sqlite3").unlink()
        writer.close()
        if writer.chunks:
            bm25.finish()
        else:
            bm25.abandon()
        (folder / "manifest.json").write_text(json.dumps(
            {"format": FORMAT, "generation": generation, "chunks": writer.chunks, "papers": writer.papers}))
        return cls(folder, generation)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex | None:
        """The saved index, or None when it is missing or damaged (the caller rebuilds it)."""
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
            if manifest.get("format") != FORMAT:
                return None
            index = cls(folder, manifest["generation"])
            if len(index) != manifest["chunks"] or len(index.papers) != manifest["papers"]:
                raise ValueError("row counts differ from the manifest")
            return index
        except FileNotFoundError:
            return None
        except Exception as err:  # noqa: BLE001 - any damage means "rebuild from Chroma"
            log.warning("lexical index in %s is damaged (%s); rebuilding it from the vector store", folder, err)
            return None

    # ---------------------------------------------------------- queries

    def __len__(self) -> int:
        return int(self.catalogue.n_chunks)

    def __contains__(self, chunk_id: object) -> bool:
        return isinstance(chunk_id, str) and self.catalogue.has_chunk(chunk_id)

    @property
    def chunk_ids(self) -> list[str]:
        """Every chunk id in row order (read from disk: for checks and tools, not per query)."""
        return self.catalogue.chunk_ids()

    def text(self, chunk_id: str) -> str:
        return self.catalogue.text(chunk_id)

    def texts(self, chunk_ids: Iterable[str]) -> dict[str, str]:
        """The texts of those of ``chunk_ids`` this index holds (one catalogue query)."""
        return self.catalogue.texts(chunk_ids)

    def terms(self, text: str) -> list[str]:
        """``text`` as this index's BM25 terms (tokenized, stop words out, stemmed)."""
        return tokenize([text], stemmer())[0]

    def search(self, query: str, n: int, allowed: np.ndarray | None = None) -> list[tuple[str, float]]:
        """Best chunks as (chunk id, BM25 score), score > 0 only, best first.

        ``allowed`` is a boolean mask over chunks (filters); masked chunks never appear.
        """
        if self.bm25 is None or not query.strip():
            return []
        tokens = self.terms(query)
        if not tokens:
            return []
        scores = self.bm25.get_scores(tokens)
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        n = min(n, len(scores))
        part = np.argpartition(-scores, n - 1)[:n]
        top = [int(i) for i in part[np.argsort(-scores[part], kind="stable")] if scores[i] > 0]
        ids = self.catalogue.chunk_ids_at(top)
        return [(ids[i], float(scores[i])) for i in top]

    def mask(self, paper_ids: set[str]) -> np.ndarray:
        """Boolean mask of the chunks that belong to ``paper_ids``."""
        rows = np.zeros(max(1, len(self.papers)), dtype=bool)
        rows[self.catalogue.paper_rows(paper_ids)] = True
        owners = np.fromiter((paper for _, paper in self.catalogue.chunk_papers()), np.int64, len(self))
        return rows[owners]

    def close(self) -> None:
        self.catalogue.close()


def _remove_abandoned(folder: Path) -> None:
    """Scratch and set-aside copies of ``folder`` left by builders that died (their pid is gone)."""
    for kind in ("tmp", "old"):
        for path in folder.parent.glob(f"{folder.name}.{kind}-*"):
            pid = path.name.split("-")[1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def _one_builder(folder: Path) -> Iterator[None]:
    """One builder at a time per lexical folder, across threads and processes (an ``flock`` on a
    file beside it; each call opens its own, so threads of one process exclude each other too).
    A data home that cannot hold the lock file builds without it (and elsewhere: see below)."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        handle = open(folder.with_name(folder.name + ".lock"), "a+")  # noqa: SIM115 - closed below
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def refresh_lexical(store: Store, settings: Settings, force: bool = False) -> LexicalIndex:
    """The saved lexical index if it matches the store's generation, else rebuilt and saved.

    Readers that find it stale at once (threads of a server, replicas' processes) rebuild it one
    at a time, and those that waited take the index the first one saved. Built beside the saved
    one and swapped in (a crash leaves the old index or none, and its scratch folder is removed
    by the next build); a process still reading the old one keeps its open files. A data home it
    cannot write to gets the index built in a temporary folder, with a warning."""
    generation = store.generation()
    folder = settings.lexical_dir
    if not force:
        index = LexicalIndex.load(folder)
        if index is not None and index.generation == generation:
            return index
    with _one_builder(folder):
        if not force:  # another reader may have rebuilt it while this one waited
            index = LexicalIndex.load(folder)
            if index is not None and index.generation == generation:
                return index
        return _rebuild(store, folder, generation)


def _rebuild(store: Store, folder: Path, generation: str) -> LexicalIndex:
    identity = store.identity()
    titled = identity is None or not identity.chunker.endswith("+notitle")
    _remove_abandoned(folder)
    suffix = f"{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(3)}"  # whose scratch it is
    tmp = folder.with_name(f"{folder.name}.tmp-{suffix}")
    try:
        index = LexicalIndex.build(store.iter_chunks(), generation, tmp, include_title=titled)
    except (OSError, sqlite3.Error) as err:  # read-only or full home: build where we can, say why it is not saved
        log.warning("could not save the lexical index to %s: %s", folder, err)
        shutil.rmtree(tmp, ignore_errors=True)
        aside = Path(tempfile.mkdtemp(prefix="paper-rag-lexical-"))
        return LexicalIndex.build(store.iter_chunks(), generation, aside / "index", include_title=titled)
    old = folder.with_name(f"{folder.name}.old-{suffix}")
    with suppress(FileNotFoundError):
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    index.folder = folder
    return index
