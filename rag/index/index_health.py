"""Whether the embedded Chroma index can be opened safely: damage checks in plain reads, and the
rollback of a write that was killed half-way.

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

A write killed half-way (``kill -9`` during an ingest or ``rag papers rm``) leaves a hot
rollback journal: not damage. `check_local_index` lets SQLite roll it back under the ingest
lock (`roll_back_interrupted_write`), and a problem that persists while another ingest holds
that lock is `IndexBusyError` ("try again in a moment"), never damage (`ingest_running`).
Left out: opening the client (`rag.index.chroma_client`), the Chroma calls (`rag.index.store`) and the
mapping of other failures to errors (`rag.index.store_errors`).
"""

from __future__ import annotations

import logging
import sqlite3
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.errors import IndexBusyError, IndexDamagedError, StoreError
from rag.index.store_errors import READ_ONLY_FIX, as_store_error
from rag.settings import Settings

log = logging.getLogger(__name__)

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
# ingest locks held, as (lock path, thread): `rag.ingest.ingestor.ingest_lock` registers them. Per thread: a server's
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
