"""``rag bench`` steps 1 and 2: first ingest against a bare encode, and re-ingest of an unchanged corpus.

`bench_first_ingest`: `rag.ingest.ingestor.Ingestor` on a fresh data home vs a bare
``SentenceTransformer.encode`` of the same chunk texts (same batch size, normalised); model
loaded in both arms, arms interleaved, medians. Target ratio <= 1.2. `bench_reingest`: re-ingest
of the unchanged corpus as a fraction of the first. Target <= 5%. Left out: large corpora
(`eval.bench.scale`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.bench.figures import TARGETS, Log, bench_settings, fmt_s, median, table_row, verdict
from rag.settings import Settings


def chunk_texts(embedder: Any, settings: Settings, corpus: Sequence[Path]) -> tuple[int, list[str]]:
    from rag.index.chunking import Chunker
    from rag.index.loaders import load_paths

    papers = list(load_paths(corpus).papers.values())
    cfg = settings.chunking
    chunks = Chunker(embedder, cfg.max_tokens, cfg.include_title).chunk(papers)
    return len(papers), [c.embed_text for c in chunks]


def bench_first_ingest(embedder: Any, base: Settings, corpus: Sequence[Path], work: Path, rounds: int = 3,
                       log: Log = print) -> dict[str, Any]:
    """Ingest into a fresh data home vs bare ``model.encode`` of the same chunk texts, interleaved."""
    from rag.index.loaders import LoadReport, load_paths
    from rag.ingest.ingestor import Ingestor

    n_papers, texts = chunk_texts(embedder, base, corpus)
    size = base.embedding.batch_size
    embedder.model.encode(texts[:8], batch_size=size, normalize_embeddings=True, show_progress_bar=False)  # warm
    # warm the ingest path too (chromadb import and first client, bm25s): imports are not ingest
    warm = LoadReport(papers=dict(list(load_paths(corpus).papers.items())[:2]))
    Ingestor(bench_settings(base, work / "warm-up"), embedder=embedder).run(report=warm)
    ingest_s: list[float] = []
    encode_s: list[float] = []
    homes: list[str] = []
    summaries: list[dict[str, Any]] = []
    for r in range(rounds):
        for arm in (("ingest", "encode") if r % 2 == 0 else ("encode", "ingest")):
            log(f"first ingest: round {r + 1}/{rounds}, {arm}")
            if arm == "ingest":
                home = work / f"ingest-{r}"
                shutil.rmtree(home, ignore_errors=True)
                start = time.perf_counter()
                summary = Ingestor(bench_settings(base, home), embedder=embedder).run(list(corpus))
                ingest_s.append(time.perf_counter() - start)
                homes.append(str(home))
                summaries.append({k: v for k, v in summary.as_dict().items() if k not in ("errors", "merges")})
            else:
                start = time.perf_counter()
                embedder.model.encode(texts, batch_size=size, normalize_embeddings=True, convert_to_numpy=True,
                                      show_progress_bar=False)
                encode_s.append(time.perf_counter() - start)
    ours, baseline = median(ingest_s), median(encode_s)
    ratio = ours / baseline
    target = TARGETS["first_ingest"]
    name = f"first ingest ({n_papers} papers, {len(texts)} chunks)"
    return {"papers": n_papers, "chunks": len(texts), "chars": sum(map(len, texts)), "batch_size": size,
            "rounds": rounds, "ingest_s": ingest_s, "encode_s": encode_s, "summaries": summaries, "homes": homes,
            "ours": ours, "baseline": baseline, "ratio": ratio, "target": target,
            "rows": [table_row(name, fmt_s(ours), f"{fmt_s(baseline)} bare encode", ratio, f"<= {target}",
                               verdict(ratio, target))]}


def bench_reingest(embedder: Any, base: Settings, corpus: Sequence[Path], homes: Sequence[str],
                   first_ingest_s: float, log: Log = print) -> dict[str, Any]:
    """Ingest of the unchanged corpus into each already-built home, as a fraction of the first ingest."""
    from rag.ingest.ingestor import Ingestor

    times: list[float] = []
    embedded: list[int] = []
    for i, home in enumerate(homes):
        log(f"re-ingest: {i + 1}/{len(homes)}")
        start = time.perf_counter()
        summary = Ingestor(bench_settings(base, Path(home)), embedder=embedder).run(list(corpus))
        times.append(time.perf_counter() - start)
        embedded.append(summary.chunks_embedded)
    ours = median(times)
    ratio = ours / first_ingest_s
    target = TARGETS["reingest"]
    return {"reingest_s": times, "chunks_embedded": embedded, "ours": ours, "baseline": first_ingest_s,
            "ratio": ratio, "target": target,
            "rows": [table_row("re-ingest, unchanged corpus", fmt_s(ours), f"{fmt_s(first_ingest_s)} first ingest",
                               ratio, f"<= {target:.0%}", verdict(ratio, target))]}


