"""Chroma and file-system failures -> our one-line `StoreError`s, each with its fix.

`as_store_error` tells a lost Chroma server, a full disk (also when Chroma's message names
no disk: `short_of_space` checks the free space against what a write may need), a
read-only or not-a-folder data home, and damage apart; anything else is left to the
caller (None). Left out: the damage checks themselves (`rag.index.index_health`) and the
Chroma calls (`rag.index.store`).
"""

from __future__ import annotations

import shutil

from rag.errors import ChromaUnavailableError, IndexDamagedError, StoreError
from rag.settings import Settings

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
