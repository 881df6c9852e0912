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
the papers: chunk 0 of each paper holds the paper record as JSON, its abstract being its
chunks' texts joined, and every chunk its place in that abstract (`chunk_metadata`); no
Chroma documents (indexes written before that have them, and are read as they are). Left
out: chunking, embedding and retrieval logic.

Damaged files (measured with chromadb 1.5.9). Chroma's own handling of a damaged
embedded index is uneven: a missing ``header.bin`` or ``length.bin`` gives an error, but
a truncated ``header.bin``, a missing ``index_metadata.pickle`` or a deleted segment
folder makes queries *silently* return few or no results, a truncated
``data_level0.bin`` returns wrong neighbours or fails with "Error finding id", and
garbage in its link lists kills the whole process with SIGSEGV inside the Rust/C++
HNSW reader. So before an embedded client is opened, `local_index_problem` checks the
files with plain reads (no Chroma code): the SQLite header against the file size, the
tables that say which HNSW segment was persisted, and that segment's files against
the header's element count, link-list sizes and neighbour ids. Any problem raises
`IndexDamagedError` (fix: ``rag ingest --rebuild``), and `Store.drop` can then remove
what Chroma itself cannot open. It costs one pass over ``data_level0.bin`` per client
opened. Left undetected: bytes changed inside the vectors themselves (wrong distances,
no crash), and damage on a Chroma server (its own process).
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import json
import logging
import os
import shutil
import sqlite3
import struct
import threading
import time
import uuid
import zlib
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
    IndexBusyError,
    IndexDamagedError,
    StoreError,
)
from rag.settings import CHUNKER_VERSION, Settings

log = logging.getLogger(__name__)

PIECE = 900  # characters per metadata string (see `pack_record`)
PAGE = 2000  # rows per Chroma get/upsert call (Chroma caps batch sizes)
RETIRE_AFTER_S = 3.0  # a swapped-out collection outlives readers' refresh interval (1 s) and a query or two
SWAP_WAIT_S = 2.0  # a reader that finds the collection renamed away mid-swap waits this long for the new one
HTTP_TIMEOUT_S = 60.0  # per request to a Chroma server: chromadb's HttpClient would wait forever on a hung one


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


def paper_metadata(paper: Paper, abstract: str | None = None) -> str:
    """The paper record as JSON for chunk 0, its abstract being its chunks' texts joined
    (``abstract``; default the paper's own)."""
    record = {k: v for k, v in paper.to_dict().items() if k != "abstract" and v not in (None, [], {})}
    record["abstract"] = paper.abstract if abstract is None else abstract
    return json.dumps(record, ensure_ascii=False, sort_keys=True)


def pack_record(record: str) -> dict[str, str]:
    """A paper record (JSON) as chunk-0 metadata: zlib-compressed, base85, in pieces of at most
    `PIECE` characters under ``paper``, ``paper_1``, ... (the first says how many).

    Chroma's embedded SQLite indexes every metadata string; an index entry past ~1,000 bytes
    spills onto a 4 KB overflow page of its own, so one 1.6 KB record costs ~5 KB of index.

    >>> meta = pack_record('{"title": "T"}')
    >>> meta["paper"][:5], unpack_record(meta)
    ('z1:1:', '{"title": "T"}')
    """
    packed = base64.b85encode(zlib.compress(record.encode("utf-8"), 9)).decode("ascii")
    pieces = [packed[i:i + PIECE] for i in range(0, len(packed), PIECE)] or [""]
    return {"paper": f"z1:{len(pieces)}:{pieces[0]}", **{f"paper_{i}": p for i, p in enumerate(pieces[1:], 1)}}


def unpack_record(meta: dict[str, Any]) -> str | None:
    """The paper record JSON `pack_record` stored in ``meta`` (plain JSON from indexes written before; None: none)."""
    head = meta.get("paper")
    if not head:
        return None
    if not head.startswith("z1:"):
        return str(head)
    count, first = head[3:].split(":", 1)
    packed = first + "".join(str(meta[f"paper_{i}"]) for i in range(1, int(count)))
    return zlib.decompress(base64.b85decode(packed)).decode("utf-8")


def chunk_metadata(chunk: Chunk, paper: Paper, n_chunks: int, start: int = 0,
                   abstract: str | None = None) -> dict[str, Any]:
    """What Chroma keeps of a chunk besides its vector. Its text is stored once, in the paper
    record on chunk 0 (`pack_record`): each chunk has its ``start`` and ``length`` in that
    abstract (no Chroma document: Chroma would keep it again in its metadata index and in its
    full-text index, which cannot be turned off in embedded Chroma: ~60% of the disk)."""
    meta: dict[str, Any] = {"paper_id": chunk.paper_id, "chunk": chunk.index, "n_chunks": n_chunks,
                            "hash": chunk.hash, "start": start, "length": len(chunk.text)}
    if chunk.index == 0:
        meta.update(pack_record(paper_metadata(paper, abstract)))
    return meta


def chunk_metadatas(chunks: Sequence[Chunk], paper: Paper) -> list[dict[str, Any]]:
    """`chunk_metadata` for all of one paper's chunks, in order (their texts joined are its abstract)."""
    abstract = " ".join(c.text for c in chunks)
    starts = np.cumsum([0] + [len(c.text) + 1 for c in chunks[:-1]])
    return [chunk_metadata(c, paper, len(chunks), int(s), abstract) for c, s in zip(chunks, starts)]


# ------------------------------------------------------------------ integrity checks

HNSW_FILES = ("header.bin", "data_level0.bin", "length.bin", "link_lists.bin", "index_metadata.pickle")
# chromadb's hnswlib fork, persist version 1: version, offsetLevel0, max_elements, cur_element_count,
# size_data_per_element, label_offset, offsetData, maxlevel, enterpoint_node, maxM, maxM0, M, mult, ef_construction
_HNSW_HEADER = struct.Struct("<iQQQQQQiIQQQdQ")


@dataclass(frozen=True)
class IndexProblem:
    """What is wrong with the embedded index files; ``database``: the SQLite file itself."""

    message: str
    database: bool = False
    journal: bool = False  # a hot rollback journal: an interrupted write SQLite rolls back by itself, not damage


def _sqlite_problem(db: Path) -> IndexProblem | None:
    size = db.stat().st_size
    if size == 0:
        return IndexProblem("chroma.sqlite3 is empty (0 bytes)", database=True)
    with db.open("rb") as fh:
        head = fh.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return IndexProblem("chroma.sqlite3 is not an SQLite database", database=True)
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    if head[24:28] == head[92:96] and pages and size < pages * page_size:
        return IndexProblem(f"chroma.sqlite3 is truncated ({size:,} bytes of {pages * page_size:,})", database=True)
    return None


def _hnsw_problem(folder: Path, dim: int | None, cosine: bool) -> str | None:
    """Why Chroma's persisted HNSW segment in ``folder`` cannot be trusted, or None."""
    name = folder.name
    if not folder.is_dir():
        return f"vector segment folder {name} is missing"
    for file in HNSW_FILES:
        if not (folder / file).is_file():
            return f"{name}/{file} is missing"
    header = (folder / "header.bin").read_bytes()
    if len(header) != _HNSW_HEADER.size:
        return f"{name}/header.bin is {len(header)} bytes, expected {_HNSW_HEADER.size}"
    (version, _, max_elements, count, per_element, label_offset, data_offset, max_level, entry,
     max_m, max_m0, m, _, _) = _HNSW_HEADER.unpack(header)
    if version != 1:  # a format this code does not know: leave the checks to Chroma
        log.debug("unknown HNSW persist version %s in %s; not checked", version, folder)
        return None
    if not (count <= max_elements and per_element == label_offset + 8 and data_offset == 4 + 4 * max_m0
            and (dim is None or label_offset == data_offset + 4 * dim) and max_m and max_m0 >= max_m
            and m == max_m and (count == 0 or (entry < count and 0 <= max_level < 64))):
        return f"{name}/header.bin holds impossible values"
    sizes = {"data_level0.bin": per_element, "length.bin": 4}
    for file, unit in sizes.items():
        have = (folder / file).stat().st_size
        if have not in (count * unit, max_elements * unit):
            return f"{name}/{file} is {have:,} bytes, expected {count * unit:,}"
    if (folder / "index_metadata.pickle").read_bytes()[-1:] != b".":  # pickle's STOP opcode
        return f"{name}/index_metadata.pickle is truncated"
    if count == 0:
        return None
    level0 = np.memmap(folder / "data_level0.bin", dtype=np.uint8, mode="r", shape=(count, per_element))
    for start in range(0, count, 32768):  # bounded memory on big indexes
        block = np.ascontiguousarray(level0[start:start + 32768])
        links = block[:, :data_offset].view(np.uint32)
        n_links, flags = links[:, 0] & 0xFFFF, links[:, 0] >> 16
        used = np.arange(max_m0)[None, :] < n_links[:, None]
        if (n_links > max_m0).any() or (flags > 1).any() or (links[:, 1:][used] >= count).any():
            return f"{name}/data_level0.bin has link lists that point outside the index"
        if cosine:  # stored normalised: garbage shows as a vector that is not unit length
            with np.errstate(all="ignore"):
                norms = np.linalg.norm(block[:, data_offset:label_offset].view(np.float32), axis=1)
                if not (np.abs(norms - 1.0) < 1e-2).all():
                    return f"{name}/data_level0.bin holds vectors that are not unit length"
    del level0
    upper = (folder / "link_lists.bin").read_bytes()
    level_size, pos = 4 + 4 * max_m, 0
    for _ in range(count):
        if pos + 4 > len(upper):
            return f"{name}/link_lists.bin is truncated"
        (size,) = struct.unpack_from("<I", upper, pos)
        pos += 4
        if size % level_size or size // level_size > max_level or pos + size > len(upper):
            return f"{name}/link_lists.bin is damaged"
        if size:
            lists = np.frombuffer(upper, dtype=np.uint32, count=size // 4, offset=pos).reshape(-1, 1 + max_m)
            n = lists[:, 0]
            if (n > max_m).any() or (lists[:, 1:][np.arange(max_m)[None, :] < n[:, None]] >= count).any():
                return f"{name}/link_lists.bin has link lists that point outside the index"
        pos += size
    if pos != len(upper):
        return f"{name}/link_lists.bin has {len(upper) - pos:,} bytes too many"
    return None


_JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")  # the header of a rollback journal that is not finished


def _journal_pending(db: Path) -> bool:
    """Whether ``db`` has a rollback journal that was not finished (hot, or a live writer's)."""
    try:
        with db.with_name(JOURNAL).open("rb") as fh:
            return fh.read(8) == _JOURNAL_MAGIC
    except OSError:
        return False


def local_index_problem(settings: Settings) -> IndexProblem | None:
    """Visible damage to the embedded Chroma files of ``settings.store.collection``, or None.

    Reads only: the SQLite header and tables, then the HNSW files of the collection's
    persisted vector segment (Chroma keeps small collections in its log and persists
    the HNSW index only past ``hnsw:sync_threshold`` (1000) vectors; until then there
    are no files to check). Returns None for a home with nothing ingested yet.
    """
    db = settings.chroma_dir / "chroma.sqlite3"
    if not db.is_file():
        return None
    if problem := _sqlite_problem(db):
        if _journal_pending(db):  # a write killed half-way through growing the file: SQLite rolls it back
            return IndexProblem(f"an interrupted write left {JOURNAL} behind ({problem.message})", journal=True)
        return problem
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute(
                "SELECT s.id, c.dimension, c.schema_str FROM segments s JOIN collections c ON s.collection = c.id "
                "JOIN max_seq_id m ON m.segment_id = s.id WHERE c.name = ? AND s.scope = 'VECTOR'",
                (settings.store.collection,)).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError as err:
        text = str(err).lower()
        if getattr(err, "sqlite_errorcode", None) == SQLITE_READONLY_ROLLBACK or "readonly" in text:
            # a read-only connection cannot roll back a hot journal: a write was interrupted (kill -9)
            return IndexProblem(f"an interrupted write left {JOURNAL} behind", journal=True)
        if "locked" in text or "busy" in text or "no such" in text or "unable to open" in text:
            log.debug("index check skipped: %s", err)  # another writer, or a newer Chroma schema
            return None
        return IndexProblem(f"chroma.sqlite3 cannot be read ({err})", database=True)
    except sqlite3.DatabaseError as err:
        return IndexProblem(f"chroma.sqlite3 cannot be read ({err})", database=True)
    for segment, dim, schema in rows:
        cosine = '"space":"cosine"' in (schema or "")
        if message := _hnsw_problem(settings.chroma_dir / segment, dim, cosine):
            return IndexProblem(message)
    return None


def check_local_index(settings: Settings) -> None:
    """Raise `IndexDamagedError` when `local_index_problem` finds damage.

    A writer (another ingest) may be half-way through rewriting the files; a problem in
    files changed in the last few seconds is re-checked a few times before it counts, and
    one that persists while another ingest holds the lock is `IndexBusyError` ("try again
    in a moment"), never "damaged": the writer is about to replace those files.
    """
    problem = local_index_problem(settings)
    if problem is not None and problem.journal:
        roll_back_interrupted_write(settings)
        problem = local_index_problem(settings)
    for _ in range(3):
        if problem is None or time.time() - _newest_change(settings) >= 5:
            break
        time.sleep(0.5)
        problem = local_index_problem(settings)
    if problem is None:
        return
    if problem.journal:  # still hot after a rollback under the lock: SQLite could not roll it back
        raise StoreError(f"an interrupted write left {JOURNAL} in {settings.chroma_dir} and SQLite could not "
                         "roll it back", READ_ONLY_FIX)
    if ingest_running(settings):
        raise IndexBusyError(f"the index is being written by another ingest ({problem.message})")
    raise IndexDamagedError(f"the index in {settings.home} is damaged: {problem.message}")


def _newest_change(settings: Settings) -> float:
    """The latest modification time of any file of the embedded index (0 when there are none)."""
    try:
        return max((p.stat().st_mtime for p in settings.chroma_dir.rglob("*") if p.is_file()), default=0.0)
    except OSError:  # a file vanished while we looked: something is writing right now
        return time.time()


SQLITE_READONLY_ROLLBACK = 776  # a read-only connection found a hot journal it may not roll back
JOURNAL = "chroma.sqlite3-journal"
# ingest locks held, as (lock path, thread): `rag.ingest.ingest_lock` registers them. Per thread: a server's
# upload ingests on one thread while others read, and to those it is another ingest ("busy", not "damaged")
HELD_LOCKS: set[tuple[str, int]] = set()


def holds_ingest_lock(settings: Settings) -> bool:
    """Whether this thread holds the data home's ingest lock."""
    return (str(settings.lock_path), threading.get_ident()) in HELD_LOCKS


def roll_back_interrupted_write(settings: Settings) -> None:
    """Let SQLite roll back the hot journal a killed writer left (``kill -9`` during an ingest or
    ``rag papers rm``): open the database read-write under the ingest lock, which is all SQLite needs.

    The index is then as it was before the interrupted write, and a warning says so. Raises
    `IndexBusyError` when another process holds the lock (it is writing, and rolls back itself),
    and the read-only or no-space `StoreError` when the home cannot be written."""
    from filelock import FileLock, Timeout

    db = settings.chroma_dir / "chroma.sqlite3"
    lock = None if holds_ingest_lock(settings) else FileLock(str(settings.lock_path))
    try:
        if lock is not None:
            lock.acquire(timeout=0)
    except Timeout:
        raise IndexBusyError(f"the index is being written by another ingest ({JOURNAL} is in use)") from None
    except OSError as err:
        raise StoreError(f"an interrupted write left {JOURNAL} in {settings.chroma_dir}, and it cannot be rolled "
                         f"back: the data home {settings.home} is not writable ({err})", READ_ONLY_FIX) from None
    try:
        con = sqlite3.connect(str(db), timeout=10)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchall()  # a read-write read rolls the journal back
        finally:
            con.close()
    except sqlite3.Error as err:
        mapped = as_store_error(err, settings)
        raise (mapped or StoreError(f"could not roll back the interrupted write in {settings.chroma_dir} ({err})",
                                    READ_ONLY_FIX)) from None
    finally:
        if lock is not None:
            lock.release()
    log.warning("an interrupted write was rolled back in %s: the index is as it was before that write",
                settings.chroma_dir)


def ingest_running(settings: Settings) -> bool:
    """Whether another ingest (another process, or another thread of this one) holds the data home's
    ingest lock (tried without waiting)."""
    from filelock import FileLock, Timeout

    if holds_ingest_lock(settings):  # this thread's own ingest
        return False
    if not settings.lock_path.exists():
        return False
    lock = FileLock(str(settings.lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:  # a read-only home: nobody can be writing there
        return False
    lock.release()
    return False


def make_client(settings: Settings, check: bool = True) -> Any:
    """A Chroma client; an embedded one only after `check_local_index` (unless ``check=False``)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    url = settings.store.chroma_url
    if not url and check:
        try:
            check_local_index(settings)
        except OSError as err:
            raise StoreError(f"cannot read the index in {settings.chroma_dir}: {err}",
                             "check that the data home (RAG_HOME) is a readable folder") from None
    try:
        if url:
            _probe_server(url)
            parsed = urlparse(url)
            client = chromadb.HttpClient(host=parsed.hostname or "127.0.0.1", port=parsed.port or 8000,
                                         ssl=parsed.scheme == "https", settings=chroma_settings)
            session = getattr(getattr(client, "_server", None), "_session", None)
            if session is not None:  # chromadb creates it with timeout=None
                import httpx

                session.timeout = httpx.Timeout(HTTP_TIMEOUT_S, connect=min(5.0, HTTP_TIMEOUT_S))
            return client
        settings.chroma_dir.mkdir(parents=True, exist_ok=True)
        try:
            return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)
        except Exception:
            _forget_local_system(settings)  # chromadb caches the half-started system: the next try must start afresh
            raise
    except StoreError:
        raise
    except (ValueError, ConnectionError, OSError) as err:
        if url:
            raise ChromaUnavailableError(f"cannot reach the Chroma server at {url}: {err}") from None
        if isinstance(err, OSError):
            raise as_store_error(err, settings) from None  # type: ignore[misc]
        raise StoreError(f"cannot open the index in {settings.chroma_dir}: {err}",
                         "check that the data home (RAG_HOME) exists and is writable") from None
    except Exception as err:  # chromadb raises bare Exceptions for an unreachable server
        if url and "connect" in str(err).lower():
            raise ChromaUnavailableError(f"cannot reach the Chroma server at {url}") from None
        mapped = as_store_error(err, settings)  # e.g. "attempt to write a readonly database"
        if mapped is None:
            raise
        raise mapped from None


def _probe_server(url: str) -> None:
    """Fail fast (`ChromaUnavailableError`) on a server that is down or hung, before chromadb's untimed calls."""
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/api/v2/heartbeat", timeout=min(5.0, HTTP_TIMEOUT_S)).raise_for_status()
    except httpx.HTTPError as err:
        raise ChromaUnavailableError(f"cannot reach the Chroma server at {url} ({type(err).__name__}: {err})"
                                     [:300]) from None


NO_SPACE_FIX = "free disk space (or point RAG_HOME at a bigger disk), then run the same command again: " \
               "what was written is kept"
READ_ONLY_FIX = "make the data home writable, or set RAG_HOME to a writable folder " \
                "(the index, its lock and caches are written there, even to search)"
_DAMAGE_WORDS = ("hnsw", "segment", "corrupt", "no such file", "database disk image", "index", "finding id",
                 "not a database")


MIN_FREE_BYTES = 32 << 20  # below this, or below the index's own size, a failed write is a full disk


def short_of_space(settings: Settings, always: bool = False) -> tuple[int, int] | None:
    """(free bytes, bytes a write may need) when the data home's disk has less free than that, else None
    (``always``: the pair in any case). A write may need about the index's size again: SQLite
    journals the pages it changes, and Chroma's compaction rewrites its segments. Chroma reports
    a full disk during compaction as "Error in compaction: Failed to apply logs to the metadata
    segment", which names no disk at all."""
    folder = settings.chroma_dir if settings.chroma_dir.exists() else settings.home
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
        size = sum(p.stat().st_size for p in settings.chroma_dir.rglob("*") if p.is_file()) \
            if settings.chroma_dir.is_dir() else 0
    except OSError:
        return None
    needed = max(MIN_FREE_BYTES, size)
    return (free, needed) if always or free < needed else None


def _mb(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MB"


def as_store_error(err: BaseException, settings: Settings) -> StoreError | None:
    """Our one-line error for a Chroma or file-system failure, or None for anything else.

    Covers a lost server, a full disk, a read-only (or not-a-folder) data home, and damage.
    """
    import errno

    text = f"{type(err).__name__}: {err}"
    low, url = text.lower(), settings.store.chroma_url
    where = url or str(settings.home)
    code = err.errno if isinstance(err, OSError) else None
    if url and any(w in low for w in ("connect", "timed out", "timeout", "refused", "unavailable")):
        return ChromaUnavailableError(f"lost the Chroma server at {url} ({text[:120]})")
    short = None if url else short_of_space(settings)
    if code in (errno.ENOSPC, errno.EDQUOT) or "disk is full" in low or "no space left" in low or (
            short and "not a database" not in low and "malformed" not in low):
        free, needed = short or short_of_space(settings, always=True) or (0, 0)
        room = f"{_mb(free)} free, about {_mb(needed)} needed; " if needed else ""
        return StoreError(f"no space left to write the index in {where} ({room}{text[:160]})", NO_SPACE_FIX)
    if code in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR) or any(
            w in low for w in ("readonly database", "read-only file system", "permission denied")):
        return StoreError(f"cannot write to the data home {settings.home} ({text[:160]})", READ_ONLY_FIX)
    if isinstance(err, OSError):
        return StoreError(f"cannot use the data home {settings.home} ({text[:160]})", READ_ONLY_FIX)
    if any(w in low for w in _DAMAGE_WORDS):
        return IndexDamagedError(f"the index in {where} is damaged ({text[:160]})")
    return None


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


def _forget_local_system(settings: Settings) -> None:
    """Drop this process's cached Chroma system for the data home (its files are about to go)."""
    from chromadb.api.shared_system_client import SharedSystemClient

    system = SharedSystemClient._identifier_to_system.pop(str(settings.chroma_dir), None)
    SharedSystemClient._identifier_to_refcount.pop(str(settings.chroma_dir), None)
    if system is not None:
        try:
            system.stop()
        except Exception:  # noqa: BLE001 - it is being discarded either way
            log.debug("could not stop the Chroma system for %s", settings.chroma_dir, exc_info=True)


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
                    self.name, metadata={"hnsw:space": "cosine", "generation": "empty"}, embedding_function=None)
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
                    _forget_local_system(self.settings)
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
