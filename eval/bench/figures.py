"""What every ``rag bench`` measurement shares: statistics, table rows, formatting, settings, queries.

`median` / `p95` over raw timings, `table_row` / `verdict` / `skipped_step` for the table, `fmt_s` /
`fmt_bytes` for its cells, `bench_settings` (a settings copy on another data home), `bench_queries`
(varied queries from the bundled dev set and corpus), `du`, `loadavg`, and the paths and targets
the measurements share. Left out: the measurements themselves (one module each) and the runner.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.bundled import CORPUS, DEV_SET, bundled_file
from rag.settings import Settings

BUNDLED = bundled_file(CORPUS)
DEV = bundled_file(DEV_SET)
BIN = Path(sys.executable).parent
TARGETS = {"first_ingest": 1.2, "reingest": 0.05, "retrieval": 1.5, "tokenization": 3.0, "api": 1.1}

Log = Callable[[str], None]


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def p95(xs: Sequence[float]) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), 95)) if xs else float("nan")


def table_row(measurement: str, ours: str, baseline: str, ratio: float | None, target: str,
              status: str) -> dict[str, Any]:
    return {"measurement": measurement, "ours": ours, "baseline": baseline,
            "ratio": None if ratio is None else round(float(ratio), 4), "target": target, "status": status}


def verdict(ratio: float, target: float, higher_is_better: bool = False) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return "pass" if ok else "miss"


def skipped_step(name: str, note: str) -> dict[str, Any]:
    return {"skipped": True, "note": note, "rows": [table_row(name, "-", "-", None, "-", "skipped")]}


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def du(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when absent)."""
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_settings(base: Settings, home: Path, chroma_url: str | None = None) -> Settings:
    """``base`` with another data home and store location."""
    store = base.store.model_copy(update={"chroma_url": chroma_url})
    return base.model_copy(update={"home": Path(home), "store": store})


def bench_queries(n: int = 50, corpus: Path = BUNDLED) -> list[str]:
    """About ``n`` varied queries: dev-set questions of every type and language, title
    fragments, and short keyword queries."""
    questions: list[str] = []
    if DEV.exists():
        for line in DEV.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            for turn in record.get("turns", [record]):
                questions.append(turn["question"])
    titles = [json.loads(line)["title"] for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    keywords = ["retrieval augmented generation", "diffusion model image editing", "RLHF reward model",
                "mixture of experts routing", "long context attention", "quantization LLM inference",
                "graph neural networks", "speech recognition low resource", "protein structure",
                "multi-agent reinforcement learning", "code generation benchmark", "vision language model"]
    n_q = max(1, n * 6 // 10)
    n_t = max(1, n * 2 // 10)
    picked = questions[:: max(1, len(questions) // n_q)][:n_q] if questions else []
    picked += [" ".join(t.split()[:6]) for t in titles[:: max(1, len(titles) // n_t)][:n_t]]
    picked += keywords[: max(0, n - len(picked))]
    i = 0
    while len(picked) < n and titles:  # tiny corpora: top up with more titles
        picked.append(titles[i % len(titles)])
        i += 1
    return picked[:n]


def loadavg() -> float | None:
    """The 1-minute load average: other work on the machine skews every figure taken meanwhile."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


