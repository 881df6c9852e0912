"""``rag bench`` step 8: tokenization throughput, single-threaded vs the parallel Rust path.

`bench_tokenization`: sentence-transformers' single-threaded tokenization vs `Embedder`'s parallel
Rust-tokenizer path, and that path pipelined with a zero-cost model (the ceiling tokenization
sets for a GPU ingest). The GPU figure itself is unmeasured on machines without one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench.figures import BUNDLED, TARGETS, Log, median, table_row, verdict


class _NullModel:
    """Stands in for an infinitely fast accelerator."""

    device = "cpu"

    def eval(self) -> _NullModel:
        return self


def bench_tokenization(embedder: Any, n_texts: int = 20_000, rounds: int = 2, workers: int | None = None,
                       corpus: Path = BUNDLED, log: Log = print) -> dict[str, Any]:
    """Abstracts/s: sentence-transformers' single-threaded tokenization vs the parallel path,
    and the pipelined encode with a zero-cost model (what tokenization leaves for a GPU)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from rag.index.embeddings import Embedder

    abstracts = [json.loads(line)["abstract"] for line in corpus.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    texts = (abstracts * (n_texts // len(abstracts) + 1))[:n_texts]
    size = embedder.settings.batch_size
    batches = [texts[i:i + size] for i in range(0, len(texts), size)]
    workers = workers or embedder.tokenizer_workers
    model = embedder.model

    null = Embedder(embedder.settings)
    null.__dict__.update(model=_NullModel(), dim=embedder.dim, tokenizer=embedder.tokenizer)
    null.tokenizer_workers, null.pipelined = workers, True
    null._forward = lambda f: torch.zeros((f["input_ids"].shape[0], embedder.dim))  # type: ignore[method-assign,assignment]

    def single() -> None:
        for batch in batches:
            model.preprocess(batch)

    def ours_single() -> None:
        for batch in batches:
            embedder.features(batch)

    def parallel() -> None:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(embedder.features, batches):
                pass

    def pipeline() -> None:
        null.encode(texts)

    arms = {"single": single, "ours_single_thread": ours_single, "parallel": parallel, "pipeline_null_model": pipeline}
    single()  # warm every tokenizer copy
    times: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(rounds):
        names = list(arms)
        for name in names[r % len(names):] + names[: r % len(names)]:
            log(f"tokenization: round {r + 1}/{rounds}, {name} ({len(texts):,} abstracts)")
            start = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - start)
    rate = {k: len(texts) / median(v) for k, v in times.items()}

    sample = texts[:32]  # the parallel path gives sentence-transformers' vectors
    check = Embedder(embedder.settings)
    check.__dict__.update(model=model, dim=embedder.dim, tokenizer=embedder.tokenizer)
    check.pipelined = True
    diff = float(np.abs(check.encode(sample) - model.encode(sample, batch_size=size, normalize_embeddings=True,
                                                            convert_to_numpy=True, show_progress_bar=False)).max())
    ratio = rate["parallel"] / rate["single"]
    target = TARGETS["tokenization"]
    cpus = embedder.tokenizer_workers
    return {"texts": len(texts), "batch_size": size, "workers": workers, "rounds": rounds, "times_s": times,
            "abstracts_per_s": rate, "max_abs_diff_vs_sentence_transformers": diff,
            "ours": rate["parallel"], "baseline": rate["single"], "ratio": ratio, "target": target,
            "gpu": "unmeasured: no GPU on this machine",
            "rows": [table_row(f"tokenization, {workers} threads vs 1 ({cpus} CPUs)",
                               f"{rate['parallel']:.0f} abstracts/s",
                               f"{rate['single']:.0f} abstracts/s single-thread", ratio, f">= {target} (GPU ingest)",
                               verdict(ratio, target, higher_is_better=True)),
                     table_row("tokenization, pipelined encode with a zero-cost model",
                               f"{rate['pipeline_null_model']:.0f} abstracts/s",
                               f"{rate['single']:.0f} abstracts/s single-thread",
                               rate["pipeline_null_model"] / rate["single"], "-", "info"),
                     table_row("tokenization, Rust tokenizer single-thread",
                               f"{rate['ours_single_thread']:.0f} abstracts/s",
                               f"{rate['single']:.0f} abstracts/s via preprocess",
                               rate["ours_single_thread"] / rate["single"], "-", "info")]}


