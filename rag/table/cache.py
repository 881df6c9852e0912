"""Extracted cells kept in the data home, so a second table over the same papers is instant.

A cell is keyed by the paper's content (a hash of its title and abstract, so a changed abstract
misses and only its row is extracted again), the column (its question and the prompt that asks it,
`rag.table.columns.Column.fingerprint`) and the model (backend and model name). One SQLite file,
``table-cells.sqlite`` in the data home, opened per call: safe for the threads of a server and for
several processes.

    >>> import tempfile, pathlib
    >>> cache = CellCache(pathlib.Path(tempfile.mkdtemp()) / "cells.sqlite")
    >>> cache.put("h1", "c1", "m", {"value": "ImageNet"}); cache.get("h1", "c1", "m"), cache.get("h2", "c1", "m")
    ({'value': 'ImageNet'}, None)

Left out: eviction (a cell is a few hundred bytes: 100,000 of them are a few tens of MB; delete the
file to start over) and what a cell holds (`rag.table.cells`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from rag.index.corpus import Paper

FILE_NAME = "table-cells.sqlite"


def content_hash(paper: Paper) -> str:
    """What a paper's cells depend on: its title and abstract (not its id, which a title fixes)."""
    return hashlib.sha256(f"{paper.title}\n{paper.abstract}".encode()).hexdigest()[:24]


class CellCache:
    """Cells by (paper content hash, column fingerprint, model)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("CREATE TABLE IF NOT EXISTS cells (paper TEXT, col TEXT, model TEXT, cell TEXT, "
                   "PRIMARY KEY (paper, col, model))")
        return db

    def get(self, paper: str, column: str, model: str) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        with closing(self._connect()) as db:
            row = db.execute("SELECT cell FROM cells WHERE paper=? AND col=? AND model=?",
                             (paper, column, model)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, paper: str, column: str, model: str, cell: dict[str, Any]) -> None:
        with closing(self._connect()) as db, db:
            db.execute("INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?)",
                       (paper, column, model, json.dumps(cell, ensure_ascii=False)))

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COUNT(*) FROM cells").fetchone()[0])


__all__ = ["FILE_NAME", "CellCache", "content_hash"]
