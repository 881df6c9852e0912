"""The Chroma collection that holds chunk vectors, and its bookkeeping.

One collection per data home (embedded `PersistentClient`) or per server
(`HttpClient` when ``RAG_STORE__CHROMA_URL`` is set). Its metadata records the
embedder, vector dimension and chunker version it was built with; opening it with
another embedder raises `EmbedderMismatchError` (fix: ``rag ingest --rebuild``) instead
of Chroma's dimension crash. It also records a *generation*: a fresh token after every
completed write and a ``dirty-`` token while a write is under way, so readers can tell
that their local caches (the lexical index) are stale.

``rag ingest --rebuild`` builds aside and swaps: the new index is written into a
collection of its own (``<name>-next-<token>``, invisible to readers), then the old
collection is renamed away (``<name>-old-<token>``) and the new one renamed to ``<name>``,
then the generation file is touched. Readers keep answering from the old collection
(their open handles survive a rename) until they notice the new generation, and the
old collection is deleted only ``RETIRE_AFTER_S`` later. An interrupted rebuild leaves
the old index in place; the next ingest removes its leftovers (`Store.clean_leftovers`).

Embeddings are always passed explicitly; Chroma's default embedding function (which
downloads a model) is never used. Chunk metadata carries everything needed to rebuild
the papers (`rag.index.chunk_records`): no Chroma documents. An embedded client opens only
after its files were checked for damage (`rag.index.chroma_client.make_client`, with
`rag.index.index_health`); `drop` removes even an index Chroma itself cannot open. Left out:
chunking, embedding and retrieval logic, the damage checks (`rag.index.index_health`), opening
the client (`rag.index.chroma_client`) and the mapping of failures to errors (`rag.index.store_errors`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import EmbedderMismatchError, EmptyIndexError, StoreError
from rag.index.chroma_client import forget_local_system, make_client
from rag.index.chunk_records import unpack_record
from rag.index.chunking import Chunk
from rag.index.index_health import local_index_problem
from rag.index.store_errors import as_store_error
from rag.settings import CHUNKER_VERSION, Settings

log = logging.getLogger(__name__)

PAGE = 2000  # rows per Chroma get/upsert call (Chroma caps batch sizes)
RETIRE_AFTER_S = 3.0  # a swapped-out collection outlives readers' refresh interval (1 s) and a query or two
SWAP_WAIT_S = 2.0  # a reader that finds the collection renamed away mid-swap waits this long for the new one


@dataclass(frozen=True)
class IndexIdentity:
    """What shaped the vectors; two indexes with different identities cannot be mixed."""

    embedder: str
    chunker: str = CHUNKER_VERSION
    dim: int | None = None

    def as_metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"embedder": self.embedder, "chunker": self.chunker}
        if self.dim is not None:
            out["dim"] = self.dim
        return out

def _chroma_errors(fn):
    """Turn Chroma's transport, disk and corruption errors into our one-line errors."""

    def mapped(self: Store, err: Exception) -> Exception:
        return err if isinstance(err, StoreError) else as_store_error(err, self.settings) or err

    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except Exception as err:
            error = mapped(self, err)
            if error is err:
                raise
            raise error from None

    def generator(self: Store, *args: Any, **kwargs: Any) -> Any:  # errors while it is iterated, too
        try:
            yield from fn(self, *args, **kwargs)
        except Exception as err:
            error = mapped(self, err)
            if error is err:
                raise
            raise error from None

    chosen = generator if inspect.isgeneratorfunction(fn) else wrapper
    chosen.__name__ = fn.__name__
    chosen.__doc__ = fn.__doc__
    return chosen


class Store:
    """The chunk collection. Cheap to construct; the client opens on first use.

    ``name`` is the collection (default ``settings.store.collection``, the one readers
    use); `aside` makes a store over a private collection that only `swap_in` publishes.
    """

    def __init__(self, settings: Settings, client: Any | None = None, name: str | None = None,
                 publish: bool = True) -> None:
        self.settings = settings
        self.name = name or settings.store.collection
        self.publish = publish  # False: writes do not touch the generation file (an aside build)
        self._client = client
        self._collection: Any | None = None

    # -------------------------------------------------------------- opening

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.settings)
        return self._client

    @property
    def location(self) -> str:
        return self.settings.store.chroma_url or str(self.settings.chroma_dir)

    def _names(self) -> set[str]:
        return {getattr(c, "name", c) for c in self.client.list_collections()}

    @_chroma_errors
    def collection(self, create: bool = False) -> Any:
        if self._collection is None:
            if create:
                self._collection = self.client.get_or_create_collection(
                    self.name, metadata={"generation": "empty"}, configuration=self._hnsw(), embedding_function=None)
            else:
                self._wait_for_swap()
                self._collection = self.client.get_collection(self.name, embedding_function=None)
        return self._collection

    def _wait_for_swap(self) -> None:
        """Raise `EmptyIndexError` unless the collection exists; wait out a rebuild's swap first.

        Between its two renames a rebuild leaves ``<name>-old-*`` and no ``<name>`` for a few
        milliseconds; a reader opening the index then waits up to ``SWAP_WAIT_S`` for it.
        """
        deadline = time.monotonic() + SWAP_WAIT_S
        while True:
            names = self._names()
            if self.name in names:
                return
            swapping = any(n.startswith(f"{self.name}-old-") for n in names)
            if not swapping or time.monotonic() > deadline:
                raise EmptyIndexError(f"no index at {self.location}: nothing has been ingested yet")
            time.sleep(0.1)

    def exists(self) -> bool:
        try:
            self.collection()
        except EmptyIndexError:
            return False
        return True

    @_chroma_errors
    def metadata(self) -> dict[str, Any]:
        """Fresh collection metadata (re-read, so another process's writes show on a server)."""
        self._wait_for_swap()
        col = self.client.get_collection(self.name, embedding_function=None)
        return dict(col.metadata or {})

    def identity(self) -> IndexIdentity | None:
        meta = self.metadata()
        if "embedder" not in meta:
            return None
        return IndexIdentity(meta["embedder"], meta.get("chunker", "?"), meta.get("dim"))

    def check_identity(self, wanted: IndexIdentity) -> None:
        """Raise `EmbedderMismatchError` if the index was built with something else."""
        have = self.identity()
        if have is None:
            return
        if have.embedder != wanted.embedder or have.chunker != wanted.chunker or (
            have.dim is not None and wanted.dim is not None and have.dim != wanted.dim
        ):
            raise EmbedderMismatchError(
                f"the index at {self.location} was built with embedder {have.embedder!r} "
                f"(dim {have.dim}, chunker {have.chunker}) but {wanted.embedder!r} "
                f"(dim {wanted.dim}, chunker {wanted.chunker}) is configured")

    # -------------------------------------------------------------- generation

    @_chroma_errors
    def set_metadata(self, **values: Any) -> None:
        col = self.collection(create=True)
        meta = {k: v for k, v in (col.metadata or {}).items() if not k.startswith("hnsw:")}
        meta.update(values)
        col.modify(metadata=meta)
        if self.publish:
            self._touch_generation(str(meta.get("generation")))

    def _hnsw(self) -> dict[str, Any]:
        return {"hnsw": {"space": "cosine", "ef_search": self.settings.store.ef_search}}

    def begin_write(self, identity: IndexIdentity) -> None:
        self.set_metadata(generation=f"dirty-{uuid.uuid4().hex}", **identity.as_metadata())
        col = self.collection(create=True)
        if (col.configuration.get("hnsw") or {}).get("ef_search") != self.settings.store.ef_search:
            col.modify(configuration={"hnsw": {"ef_search": self.settings.store.ef_search}})  # an older index

    def end_write(self) -> str:
        generation = uuid.uuid4().hex
        self.set_metadata(generation=generation)
        return generation

    def generation(self) -> str:
        return str(self.metadata().get("generation", "empty"))

    @property
    def generation_file(self) -> Path:
        return self.settings.home / "generation"

    def _touch_generation(self, generation: str) -> None:
        """A file other local processes can stat cheaply to notice our writes."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        tmp = self.generation_file.with_suffix(".tmp")
        tmp.write_text(generation)
        os.replace(tmp, self.generation_file)

    def drop(self) -> None:
        """Delete the collection (``--rebuild``), also when its files are damaged.

        A damaged SQLite database cannot be opened by Chroma at all: the embedded
        ``chroma/`` folder is then removed (it is a cache of the corpus files). A damaged
        HNSW segment is deleted with its collection, its folder too.
        """
        if not self.settings.store.chroma_url and self._client is None:
            problem = local_index_problem(self.settings)
            if problem is not None:
                log.warning("dropping a damaged index in %s: %s", self.settings.chroma_dir, problem.message)
                if problem.database:
                    forget_local_system(self.settings)
                    shutil.rmtree(self.settings.chroma_dir, ignore_errors=True)
                self._client = make_client(self.settings, check=False)
        self._delete_collection(self.name)
        self._collection = None

    def _delete_collection(self, name: str) -> None:
        """Delete collection ``name`` and its vector segment folders (absent: nothing to do)."""
        segments = self._vector_segment_dirs(name)
        with contextlib.suppress(Exception):  # absent collection: nothing to drop
            self.client.delete_collection(name)
        for folder in segments:  # Chroma leaves a segment folder it could not load
            shutil.rmtree(folder, ignore_errors=True)

    # -------------------------------------------------------------- build aside and swap

    def aside(self) -> Store:
        """A store over a new, private collection ``<name>-next-<token>`` on the same client.

        Its writes do not touch the generation file, so readers neither see nor notice it
        until `swap_in` publishes it."""
        return Store(self.settings, client=self.client, name=f"{self.name}-next-{uuid.uuid4().hex[:12]}",
                     publish=False)

    @_chroma_errors
    def swap_in(self, aside: Store, retire_after_s: float | None = None) -> None:
        """Make ``aside``'s collection this store's, then delete the old one ``retire_after_s`` later.

        Two renames (old -> ``<name>-old-<token>``, aside -> ``<name>``), then the generation
        file: readers holding the old collection keep using it until they notice."""
        old = f"{self.name}-old-{uuid.uuid4().hex[:12]}"
        names = self._names()
        if self.name in names:
            self.client.get_collection(self.name, embedding_function=None).modify(name=old)
        aside.collection().modify(name=self.name)
        aside.name, self._collection = self.name, None
        self._touch_generation(self.generation())
        if self.name in names:
            time.sleep(RETIRE_AFTER_S if retire_after_s is None else retire_after_s)
            self._delete_collection(old)

    @_chroma_errors
    def clean_leftovers(self) -> list[str]:
        """Remove what an interrupted rebuild left (call under the ingest lock); returns the names removed.

        A rebuild killed between its two renames leaves no ``<name>``: the old index is
        renamed back first, so nothing is lost."""
        names = self._names()
        old = sorted(n for n in names if n.startswith(f"{self.name}-old-"))
        if self.name not in names and old:
            self.client.get_collection(old[-1], embedding_function=None).modify(name=self.name)
            old = old[:-1]
            self._collection = None
        gone = old + sorted(n for n in names if n.startswith(f"{self.name}-next-"))
        for name in gone:
            log.warning("removing %s, left by an interrupted rebuild", name)
            self._delete_collection(name)
        return gone

    def _vector_segment_dirs(self, name: str) -> list[Path]:
        db = self.settings.chroma_dir / "chroma.sqlite3"
        if self.settings.store.chroma_url or not db.is_file():
            return []
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
            try:
                rows = con.execute("SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
                                   "WHERE c.name = ? AND s.scope = 'VECTOR'", (name,)).fetchall()
            finally:
                con.close()
        except sqlite3.Error:
            return []
        return [self.settings.chroma_dir / segment for (segment,) in rows]

    # -------------------------------------------------------------- reads

    @_chroma_errors
    def count(self) -> int:
        return int(self.collection().count())

    @_chroma_errors
    def hashes_for(self, paper_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """``{paper_id: {chunk_id: hash}}`` for the given papers' stored chunks."""
        out: dict[str, dict[str, str]] = {}
        col = self.collection()
        for start in range(0, len(paper_ids), 500):
            batch = list(paper_ids[start:start + 500])
            got = col.get(where={"paper_id": {"$in": batch}}, include=["metadatas"])
            for cid, meta in zip(got["ids"], got["metadatas"]):
                out.setdefault(meta["paper_id"], {})[cid] = meta.get("hash", "")
                if meta.get("chunk") == 0:
                    out[meta["paper_id"]]["paper"] = unpack_record(meta) or ""
        return out

    @_chroma_errors
    def iter_chunks(self, page: int = PAGE) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Every stored chunk as (id, text, metadata), in pages."""
        col = self.collection()
        offset = 0
        while True:
            got = col.get(include=["documents", "metadatas"], limit=page, offset=offset)
            if not got["ids"]:
                return
            yield from zip(got["ids"], got["documents"], got["metadatas"])
            offset += len(got["ids"])

    @_chroma_errors
    def query(self, vector: np.ndarray, n: int, where: dict[str, Any] | None = None) -> list[tuple[str, float]]:
        """Nearest chunks as (chunk id, cosine similarity), best first; fewer than ``n`` when fewer
        are stored (Chroma 1.x returns what it has: no ``count()`` first, which cost 2-4 times the
        query itself at 100k papers)."""
        got = self.collection().query(query_embeddings=[vector.tolist()], n_results=n, where=where,
                                      include=["distances"])
        return [(cid, 1.0 - float(d)) for cid, d in zip(got["ids"][0], got["distances"][0])]

    # -------------------------------------------------------------- writes

    @_chroma_errors
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray, metadatas: Sequence[dict[str, Any]]) -> None:
        col = self.collection(create=True)
        for start in range(0, len(chunks), PAGE):
            sl = slice(start, start + PAGE)
            col.upsert(ids=[c.id for c in chunks[sl]], embeddings=vectors[sl], metadatas=list(metadatas[sl]))

    @_chroma_errors
    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> None:
        col = self.collection(create=True)
        for start in range(0, len(ids), PAGE):
            col.update(ids=list(ids[start:start + PAGE]), metadatas=list(metadatas[start:start + PAGE]))

    @_chroma_errors
    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        col = self.collection(create=True)
        for start in range(0, len(ids), PAGE):
            col.delete(ids=ids[start:start + PAGE])

    def size_on_disk(self) -> int | None:
        if self.settings.store.chroma_url:
            return None
        return sum(p.stat().st_size for p in self.settings.chroma_dir.rglob("*") if p.is_file())
