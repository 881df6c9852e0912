"""The Chroma collection that holds chunk vectors, and its bookkeeping.

One collection per data home (embedded `PersistentClient`) or per server
(`HttpClient` when ``RAG_STORE__CHROMA_URL`` is set). Its metadata records the
embedder, vector dimension and chunker version it was built with; opening it with
another embedder raises `EmbedderMismatchError` (fix: ``rag ingest --rebuild``) instead
of Chroma's dimension crash. It also records a *generation*: a fresh token after every
completed write and a ``dirty-`` token while a write is under way, so readers can tell
that their local caches (the lexical index) are stale.

Embeddings are always passed explicitly; Chroma's default embedding function (which
downloads a model) is never used. Chunk metadata carries everything needed to rebuild
the papers: chunk 0 of each paper holds the paper record as JSON, and the abstract is
its chunks' texts joined. Left out: chunking, embedding and retrieval logic.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from rag.chunking import Chunk
from rag.corpus import Paper
from rag.errors import (
    ChromaUnavailableError,
    EmbedderMismatchError,
    EmptyIndexError,
    IndexDamagedError,
    StoreError,
)
from rag.settings import CHUNKER_VERSION, Settings

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

PAGE = 2000  # rows per Chroma get/upsert call (Chroma caps batch sizes)


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


def paper_metadata(paper: Paper) -> str:
    """The paper record minus its abstract (rebuilt from chunks), as JSON for chunk 0."""
    record = {k: v for k, v in paper.to_dict().items() if k != "abstract" and v not in (None, [], {})}
    return json.dumps(record, ensure_ascii=False, sort_keys=True)


def chunk_metadata(chunk: Chunk, paper: Paper, n_chunks: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"paper_id": chunk.paper_id, "chunk": chunk.index, "n_chunks": n_chunks,
                            "hash": chunk.hash, "title": paper.title}
    if paper.year is not None:
        meta["year"] = paper.year
    if chunk.index == 0:
        meta["paper"] = paper_metadata(paper)
    return meta


def make_client(settings: Settings) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    url = settings.store.chroma_url
    try:
        if url:
            parsed = urlparse(url)
            return chromadb.HttpClient(host=parsed.hostname or "127.0.0.1", port=parsed.port or 8000,
                                       ssl=parsed.scheme == "https", settings=chroma_settings)
        settings.chroma_dir.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)
    except (ValueError, ConnectionError, OSError) as err:
        if url:
            raise ChromaUnavailableError(f"cannot reach the Chroma server at {url}: {err}") from None
        raise StoreError(f"cannot open the index in {settings.chroma_dir}: {err}",
                         "check that the data home (RAG_HOME) exists and is writable") from None
    except Exception as err:  # chromadb raises bare Exceptions for an unreachable server
        if url and "connect" in str(err).lower():
            raise ChromaUnavailableError(f"cannot reach the Chroma server at {url}") from None
        raise


def _chroma_errors(fn):  # type: ignore[no-untyped-def]
    """Turn Chroma's transport and corruption errors into our one-line errors."""

    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except StoreError:
            raise
        except Exception as err:
            text = f"{type(err).__name__}: {err}"
            if self.settings.store.chroma_url and any(w in text.lower() for w in ("connect", "timed out", "refused", "unavailable")):
                raise ChromaUnavailableError(f"lost the Chroma server at {self.settings.store.chroma_url} ({text[:120]})") from None
            if any(w in text.lower() for w in ("hnsw", "segment", "corrupt", "no such file", "database disk image", "index")):
                raise IndexDamagedError(f"the index in {self.settings.home} is damaged ({text[:160]})") from None
            raise

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class Store:
    """The chunk collection. Cheap to construct; the client opens on first use."""

    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        self.settings = settings
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

    @_chroma_errors
    def collection(self, create: bool = False) -> Any:
        if self._collection is None:
            name = self.settings.store.collection
            if create:
                self._collection = self.client.get_or_create_collection(
                    name, metadata={"hnsw:space": "cosine", "generation": "empty"}, embedding_function=None)
            else:
                if name not in {getattr(c, "name", c) for c in self.client.list_collections()}:
                    raise EmptyIndexError(f"no index at {self.location}: nothing has been ingested yet")
                self._collection = self.client.get_collection(name, embedding_function=None)
        return self._collection

    def exists(self) -> bool:
        try:
            self.collection()
        except EmptyIndexError:
            return False
        return True

    @_chroma_errors
    def metadata(self) -> dict[str, Any]:
        """Fresh collection metadata (re-read, so another process's writes show on a server)."""
        col = self.client.get_collection(self.settings.store.collection, embedding_function=None)
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
        self._touch_generation(str(meta.get("generation")))

    def begin_write(self, identity: IndexIdentity) -> None:
        self.set_metadata(generation=f"dirty-{uuid.uuid4().hex}", **identity.as_metadata())

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
        """Delete the collection (``--rebuild``)."""
        try:
            self.client.delete_collection(self.settings.store.collection)
        except Exception:  # noqa: BLE001 - absent collection: nothing to drop
            pass
        self._collection = None

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
                    out[meta["paper_id"]]["paper"] = meta.get("paper", "")
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
        """Nearest chunks as (chunk id, cosine similarity), best first."""
        col = self.collection()
        total = col.count()
        if total == 0:
            return []
        got = col.query(query_embeddings=[vector.tolist()], n_results=min(n, total), where=where,
                        include=["distances"])
        return [(cid, 1.0 - float(d)) for cid, d in zip(got["ids"][0], got["distances"][0])]

    # -------------------------------------------------------------- writes

    @_chroma_errors
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray, metadatas: Sequence[dict[str, Any]]) -> None:
        col = self.collection(create=True)
        for start in range(0, len(chunks), PAGE):
            sl = slice(start, start + PAGE)
            col.upsert(ids=[c.id for c in chunks[sl]], embeddings=vectors[sl],
                       documents=[c.text for c in chunks[sl]], metadatas=list(metadatas[sl]))

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
