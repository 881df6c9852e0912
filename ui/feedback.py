"""Thumbs up/down and comments from the web chat, appended durably as JSON Lines.

One JSON object per line in ``settings.feedback_path``; each line is written with a
single ``write`` on a file opened for appending, then flushed and fsynced, under a
process lock, so concurrent sessions never interleave lines and a crash loses at most
the line being written. The file doubles as an evaluation dataset; every line carries::

    {"question": str, "answer": str, "rating": "up" | "down",
     "citations": [{"number": int, "paper_id": str, "title": str}],
     "settings": {...the session's settings panel...}, "time": "2025-01-01T12:00:00Z",
     "answer_id": str, "comment": str | null, ...}

A comment is a later line for the same ``answer_id`` (the latest line for an answer
wins). Left out: reading or scoring the file (the evaluation runner does that).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.render.view import AnswerView
from ui.state import TurnRecord

REQUIRED_KEYS = ("question", "answer", "rating", "citations", "settings", "time")


def feedback_record(record: TurnRecord, rating: str, comment: str | None, session_id: str) -> dict[str, Any]:
    a = record.answer
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "answer_id": record.answer_id,
        "session": session_id,
        "rating": rating,
        "comment": comment,
        "question": a.question,
        "query": a.query,
        "answer": a.answer,
        "citations": [{"number": c.number, "paper_id": c.paper.id, "title": c.paper.title} for c in a.citations],
        "also_retrieved": [{"number": c.number, "paper_id": c.paper.id, "title": c.paper.title}
                           for c in a.also_retrieved],
        "abstained": a.abstained,
        "incomplete": a.incomplete,
        "unsupported_sentences": len(AnswerView.of(a).flagged),
        "backend": a.backend,
        "model": a.model,
        "settings": record.settings.as_dict(),
        "timings": {k: round(v, 4) for k, v in a.timings.items()},
    }


def _session_of(line: str) -> str | None:
    """The ``session`` of one JSON line (None when the line is not an object or has none)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry.get("session") if isinstance(entry, dict) else None


class FeedbackLog:
    """Append-only JSON Lines file, safe for concurrent writers in this process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, entry: dict[str, Any]) -> None:
        missing = [k for k in REQUIRED_KEYS if k not in entry]
        if missing:
            raise ValueError(f"feedback line lacks {missing}")
        line = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                with os.fdopen(fd, "ab", closefd=False) as fh:
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
            finally:
                os.close(fd)

    def export(self, folder: Path, session: str | None = None) -> Path | None:
        """A snapshot of the log in ``folder`` (for download), or None when there is nothing to export.

        ``session``: only that session's lines (what the web chat offers a tab); None: every line."""
        with self._lock:
            if not self.path.is_file() or self.path.stat().st_size == 0:
                return None
            if session is None:
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / "feedback.jsonl"
                shutil.copyfile(self.path, target)
                return target
            mine = [line for line in self._lines() if _session_of(line) == session]
        if not mine:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "feedback.jsonl"
        target.write_text("".join(mine), encoding="utf-8")
        return target

    def _lines(self) -> list[str]:
        with self.path.open(encoding="utf-8") as fh:
            return [line if line.endswith("\n") else line + "\n" for line in fh if line.strip()]

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
