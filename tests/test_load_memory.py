"""Many sequential questions in one process: memory growth is reported and bounded.

CI runs 200 questions (RAG_LOAD_ASKS overrides; the closing note reports a 1,000 run).
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import psutil
import pytest

from rag.answer.answerer import Answerer
from rag.settings import Settings

from .conftest import ROOT

ASKS = int(os.environ.get("RAG_LOAD_ASKS", "200"))


def questions() -> list[str]:
    out = []
    for line in (ROOT / "data" / "eval" / "dev.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        out += [t["question"] for t in record.get("turns", [])] or [record["question"]]
    return out


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sequential_asks_do_not_leak(bundled_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    answerer = Answerer(Settings(llm={"backend": "extractive"}), embedder=embedder)
    pool = questions()
    process = psutil.Process()
    for q in pool:  # warm-up: every question once, so caches hold what they will hold
        answerer.ask(q)
    gc.collect()
    start = process.memory_info().rss
    samples = []
    for i in range(ASKS):
        answer = answerer.ask(pool[i % len(pool)])
        assert answer.answer
        if (i + 1) % 50 == 0:
            gc.collect()
            samples.append(process.memory_info().rss)
    growth = samples[-1] - start
    per_question = growth / ASKS
    print(f"\n{ASKS} asks: rss start {start / 2**20:.1f} MiB, end {samples[-1] / 2**20:.1f} MiB, "
          f"growth {growth / 2**20:.2f} MiB ({per_question / 1024:.2f} KiB/question); "
          f"samples {[round(s / 2**20, 1) for s in samples]}")
    assert per_question < 20 * 1024, "more than 20 KiB retained per question: a leak"
