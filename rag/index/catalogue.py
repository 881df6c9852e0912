"""The paper catalogue on disk: papers and their chunks in one SQLite file, read on demand.

A reader process used to unpickle every paper and chunk text at start (~1 GB at 100k papers);
`Catalogue` answers from ``catalogue.sqlite3`` instead: ``papers`` (row, id, the record with its abstract
as zlib-compressed JSON) and ``chunks`` (row = the chunk's row in the BM25 index, id, paper
row, offset and length of its text in the abstract: each text is stored once). `Papers` is the
catalogue as a read-only ``Mapping[str, Paper]`` (what ``index.papers`` always was), its
``values()`` and ``items()`` streamed from disk. The file is opened ``immutable`` and read-only:
a rebuilt index is a new file swapped in beside it, so a reader that holds this one keeps
answering from it.

`CatalogueWriter` fills a new file in one transaction, paper by paper. Left out: BM25
(`rag.index.bm25_writer`), where the rows come from (`rag.index.lexical`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rag.index.corpus import Paper

FILE = "catalogue.sqlite3"
SCHEMA = """
CREATE TABLE papers (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, data BLOB NOT NULL);
CREATE TABLE chunks (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, paper INTEGER NOT NULL, start INTEGER NOT NULL,
                     length INTEGER NOT NULL);
"""
TEXT = "SELECT p.id, c.start, c.length FROM chunks c JOIN papers p ON p.row = c.paper"
CACHE = 8192  # papers kept decoded (~25 MB): a query reads ~100, a warm working set of queries a few thousand


def _record(data: bytes) -> dict[str, Any]:
    return dict(json.loads(zlib.decompress(data)))


def make_paper(pid: str, data: bytes) -> Paper:
    """A `Paper` whose id is the stored one, even for a record that would hash otherwise."""
    return Paper.stored(_record(data), pid)


class CatalogueWriter:
    """Writes a new catalogue file; `add` one paper with its chunk texts, then `close`."""

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.con = sqlite3.connect(str(path))
        self.con.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)
        self.con.execute("BEGIN")
        self.papers = self.chunks = 0

    def add(self, pid: str, record: dict[str, Any], chunks: Sequence[tuple[str, str]]) -> str:
        """Store a paper and its chunks ((chunk id, text), in order); returns the abstract (texts joined)."""
        abstract = " ".join(text for _, text in chunks)
        record = {**{k: v for k, v in record.items() if k != "id"}, "abstract": abstract}
        data = zlib.compress(json.dumps(record, ensure_ascii=False).encode("utf-8"), 6)
        self.con.execute("INSERT INTO papers VALUES (?, ?, ?)", (self.papers, pid, data))
        start, rows = 0, []
        for cid, text in chunks:
            rows.append((self.chunks, cid, self.papers, start, len(text)))
            self.chunks += 1
            start += len(text) + 1
        self.con.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", rows)
        self.papers += 1
        return abstract

    def close(self) -> None:
        self.con.commit()
        self.con.close()


def _check_size(path: Path) -> None:
    """Raise `ValueError` unless the file is as long as its SQLite header says (a cut file
    would otherwise answer some queries and fail others)."""
    with path.open("rb") as fh:
        head = fh.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise ValueError(f"{path.name} is not an SQLite database")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if path.stat().st_size != int.from_bytes(head[28:32], "big") * page_size:
        raise ValueError(f"{path.name} is {path.stat().st_size:,} bytes, not what its header says")


class Catalogue:
    """Read-only lookups over one catalogue file (thread-safe: one connection behind a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        _check_size(path)
        self.con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        self.lock = threading.Lock()
        self.n_papers, self.n_chunks = self.one("SELECT (SELECT count(*) FROM papers), (SELECT count(*) FROM chunks)")
        self.papers = Papers(self)
        self._cache: OrderedDict[str, Paper] = OrderedDict()

    def paper(self, pid: str) -> Paper | None:
        """The paper with id ``pid`` (the `CACHE` most recent ones kept decoded), or None."""
        with self.lock:
            paper = self._cache.get(pid)
            if paper is not None:
                self._cache.move_to_end(pid)
                return paper
        row = self.one("SELECT data FROM papers WHERE id = ?", (pid,))
        if row is None:
            return None
        paper = make_paper(pid, row[0])
        with self.lock:
            self._cache[pid] = paper
            if len(self._cache) > CACHE:
                self._cache.popitem(last=False)
        return paper

    def one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        with self.lock:
            return self.con.execute(sql, args).fetchone()

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self.lock:
            return self.con.execute(sql, args).fetchall()

    def stream(self, sql: str, args: Sequence[Any] = (), page: int = 2000) -> Iterator[Any]:
        """Rows of ``sql`` (which must end in ``ORDER BY row``) a page at a time: the lock is not held between pages."""
        last = -1
        while True:
            rows = self.all(sql.replace("ORDER BY", "AND row > ? ORDER BY", 1) + f" LIMIT {page}", (*args, last))
            yield from rows
            if len(rows) < page:
                return
            last = rows[-1][0]

    def has_chunk(self, chunk_id: str) -> bool:
        return self.one("SELECT 1 FROM chunks WHERE id = ?", (chunk_id,)) is not None

    def text(self, chunk_id: str) -> str:
        row = self.one(TEXT + " WHERE c.id = ?", (chunk_id,))
        paper = self.paper(row[0]) if row is not None else None
        if paper is None:
            raise KeyError(chunk_id)
        return paper.abstract[row[1]:row[1] + row[2]]

    def texts(self, chunk_ids: Iterable[str]) -> dict[str, str]:
        """``{chunk id: text}`` for those of ``chunk_ids`` in the catalogue, in one query."""
        ids = list(dict.fromkeys(chunk_ids))
        if not ids:
            return {}
        rows = self.all(TEXT.replace("SELECT ", "SELECT c.id, ", 1) + f" WHERE c.id IN ({','.join('?' * len(ids))})",
                        ids)
        out = {}
        for cid, pid, start, length in rows:
            paper = self.paper(pid)
            if paper is not None:
                out[cid] = paper.abstract[start:start + length]
        return out

    def chunk_ids_at(self, rows: Iterable[int]) -> dict[int, str]:
        rows = [int(r) for r in rows]
        marks = ",".join("?" * len(rows))
        return dict(self.all(f"SELECT row, id FROM chunks WHERE row IN ({marks})", rows)) if rows else {}

    def chunk_ids(self) -> list[str]:
        return [cid for _, cid in self.stream("SELECT row, id FROM chunks WHERE 1 ORDER BY row")]

    def chunk_counts(self) -> dict[str, int]:
        return dict(self.all("SELECT p.id, count(*) FROM chunks c JOIN papers p ON p.row = c.paper GROUP BY c.paper"))

    def chunk_papers(self) -> Iterator[tuple[int, int]]:
        """(chunk row, paper row) for every chunk, in row order."""
        yield from self.stream("SELECT row, paper FROM chunks WHERE 1 ORDER BY row")

    def paper_rows(self, paper_ids: set[str]) -> list[int]:
        return [row for row, pid in self.stream("SELECT row, id FROM papers WHERE 1 ORDER BY row") if pid in paper_ids]

    def close(self) -> None:
        with self.lock:
            self.con.close()


class Papers(Mapping[str, Paper]):
    """The catalogue's papers by id, read from disk on each access (nothing cached)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def __getitem__(self, pid: str) -> Paper:
        paper = self.catalogue.paper(pid)
        if paper is None:
            raise KeyError(pid)
        return paper

    def __contains__(self, pid: object) -> bool:
        return isinstance(pid, str) and self.catalogue.one("SELECT 1 FROM papers WHERE id = ?", (pid,)) is not None

    def __iter__(self) -> Iterator[str]:
        return (pid for _, pid in self.catalogue.stream("SELECT row, id FROM papers WHERE 1 ORDER BY row"))

    def __len__(self) -> int:
        return int(self.catalogue.n_papers)

    def items(self) -> Iterator[tuple[str, Paper]]:  # type: ignore[override]
        for _, pid, data in self.catalogue.stream("SELECT row, id, data FROM papers WHERE 1 ORDER BY row"):
            yield pid, make_paper(pid, data)

    def values(self) -> Iterator[Paper]:  # type: ignore[override]
        return (paper for _, paper in self.items())
