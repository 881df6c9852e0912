"""The files of a run folder: ``results.jsonl`` read back and appended to, and the commit it was run at.

Shared by the runner (`eval.run`), the report (`eval.report`) and the comparison
(`eval.compare`), which all read the same file. Left out: what a line holds (`eval.run`).
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> dict[str, Any] | None:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(dirty)}


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """{question id: its latest line}; a torn last line (killed mid-write) is ignored."""
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "id" in record:
            out[record["id"]] = record
    return out


class ResultsWriter:
    """Appends lines to results.jsonl, flushing after each, from one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            with path.open("a", encoding="utf-8") as fh:
                fh.write("\n")  # close a torn line so the next record starts on its own
        self._fh = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            for record in records:
                self._fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()


__all__ = ["ResultsWriter", "git_commit", "read_results"]
