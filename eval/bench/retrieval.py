"""``rag bench`` step 3: warm hybrid retrieval against one bare Chroma query.

`bench_retrieval`: warm `Retriever.search` (query embedding included) vs "encode the query + one
Chroma ``collection.query``" on the same collection, interleaved per query; median and p95.
Median ratio target <= 1.5. Left out: retrieval quality (``rag eval retrieval``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.bench.figures import TARGETS, Log, bench_settings, median, p95, table_row, verdict
from rag.settings import Settings


def bench_retrieval(embedder: Any, base: Settings, home: Path, queries: Sequence[str], passes: int = 3,
                    chroma_url: str | None = None, log: Log = print) -> dict[str, Any]:
    """Warm hybrid search vs bare query encode + one ``collection.query``, interleaved per query."""
    from rag.search.retrieval import Retriever

    settings = bench_settings(base, home, chroma_url)
    retriever = Retriever(settings, embedder=embedder)
    collection = retriever.store.collection()
    n = min(settings.retrieval.candidates, collection.count())

    def bare(query: str) -> None:
        vector = embedder.model.encode([query], normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False)[0]
        collection.query(query_embeddings=[vector.tolist()], n_results=n, include=["distances"])

    for q in queries[:3]:  # warm both paths: lexical index loaded, caches filled
        retriever.search(q)
        bare(q)
    ours: list[float] = []
    baseline: list[float] = []
    stages: dict[str, list[float]] = {}
    log(f"retrieval: {len(queries)} queries x {passes} passes")
    for p in range(passes):
        for i, q in enumerate(queries):
            for arm in (("ours", "bare") if (i + p) % 2 == 0 else ("bare", "ours")):
                start = time.perf_counter()
                if arm == "ours":
                    result = retriever.search(q)
                    ours.append(time.perf_counter() - start)
                    for key, value in result.timings.items():
                        stages.setdefault(key, []).append(value)
                else:
                    bare(q)
                    baseline.append(time.perf_counter() - start)
    med_o, med_b, p95_o, p95_b = median(ours), median(baseline), p95(ours), p95(baseline)
    ratio = med_o / med_b
    target = TARGETS["retrieval"]
    return {"queries": len(queries), "passes": passes, "candidates": n, "ours_s": ours, "baseline_s": baseline,
            "ours": med_o, "baseline": med_b, "ours_p95": p95_o, "baseline_p95": p95_b, "ratio": ratio,
            "ratio_p95": p95_o / p95_b, "target": target,
            "stages_median_ms": {k: round(median(v) * 1000, 3) for k, v in stages.items()},
            "rows": [table_row("warm retrieval, median", f"{med_o * 1000:.1f} ms",
                               f"{med_b * 1000:.1f} ms encode+query",
                               ratio, f"<= {target}", verdict(ratio, target)),
                     table_row("warm retrieval, p95", f"{p95_o * 1000:.1f} ms", f"{p95_b * 1000:.1f} ms encode+query",
                               p95_o / p95_b, "-", "info")]}


