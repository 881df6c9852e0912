"""The child processes of ``rag bench``'s scale step: one ingest, then one fresh reader.

``python -m eval.bench.scale_child ingest SPEC`` ingests the spec's corpus into its data home
(the real model, or with ``store_only`` a `rag.testing.HashEmbedder`: pseudo-vectors seeded
from each chunk's hash, no model loaded) and writes its figures, peak RSS (VmHWM) included.
``python -m eval.bench.scale_child reader SPEC`` is a fresh `rag.search.retrieval.Retriever` over that
home with the real query embedder, as ``rag search`` and ``rag serve`` are: its resident memory
after the query model, after opening the index (lexical index, catalogue, Chroma client), and
after its first query (Chroma loads the HNSW segment then), then warm latencies. A store-only
index records the real model's name, so that real reader can open it (its dense results are
meaningless, its costs are not). Left out: sizes, servers and reporting (`eval.bench.scale`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from eval.bench.figures import bench_settings, median
from rag.settings import Settings


def peak_rss_self() -> int | None:
    """This process's peak resident memory (VmHWM, Linux). Not ``ru_maxrss`` of a child: on
    Linux a forked child inherits its parent's high-water mark through exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _settings(spec: dict[str, Any]) -> Settings:
    base = Settings.model_validate(spec["settings"])
    return bench_settings(base, Path(spec["home"]), spec.get("chroma_url"))


def ingest_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the embedder (or the hash stand-in), ingest the corpus; figures as a dict."""
    from rag.index.embeddings import Embedder
    from rag.ingest.ingestor import Ingestor
    from rag.testing import HashEmbedder

    settings = _settings(spec)
    start = time.perf_counter()
    if spec.get("store_only"):
        real = Embedder(settings.embedding)  # its name and tokenizer only: no weights loaded
        embedder: Embedder = HashEmbedder(settings.embedding, dim=int(spec.get("dim", 384)), name=real.name)
    else:
        embedder = Embedder(settings.embedding)
        embedder.model  # noqa: B018 - load now, outside the ingest timing
    load_s = time.perf_counter() - start
    rss_after_load = _rss()  # the fixed part: interpreter, torch, model
    state = {"done": 0, "next": 10_000, "t0": time.perf_counter()}

    def on_embedded(n: int) -> None:
        state["done"] += n
        if state["done"] >= state["next"]:
            rate = state["done"] / max(1e-9, time.perf_counter() - state["t0"])
            print(f"  [{spec['label']}] {state['done']:,} chunks embedded, {rate:.1f} chunks/s, "
                  f"RSS {_rss() / 2**20:.0f} MB", file=sys.stderr, flush=True)
            state["next"] += max(10_000, state["next"] // 2)

    summary = Ingestor(settings, embedder=embedder).run([spec["corpus"]], on_embedded=on_embedded)
    return {"load_model_s": load_s, "rss_after_load_bytes": rss_after_load, "ingest_s": summary.seconds,
            "papers": summary.papers_total, "chunks": summary.chunks_total,
            "chunks_embedded": summary.chunks_embedded, "rejected": summary.rejected,
            "peak_rss_bytes": peak_rss_self()}


def reader_child(spec: dict[str, Any]) -> dict[str, Any]:
    """A fresh reader: RSS by stage up to its first query, then warm retrieval latencies."""
    from rag.search.retrieval import Retriever

    settings = _settings(spec)
    queries = spec["queries"]
    rss = {"imports": _rss()}
    retriever = Retriever(settings)
    retriever.embedder.encode_query(queries[0])
    rss["query_model"] = _rss()
    retriever.index()
    rss["index_open"] = _rss()
    start = time.perf_counter()
    retriever.search(queries[0])
    first_s = time.perf_counter() - start
    rss["first_query"] = _rss()
    for q in queries[:3]:
        retriever.search(q)
    latencies: list[float] = []
    stages: dict[str, Any] = {}
    for _ in range(spec.get("passes", 2)):
        for q in queries:
            t = time.perf_counter()
            result = retriever.search(q)
            latencies.append(time.perf_counter() - t)
            for key, value in result.timings.items():
                stages.setdefault(key, []).append(value)
    rss["after_queries"] = _rss()
    return {"rss_bytes": rss, "first_query_s": first_s, "retrieval_s": latencies,
            "stages_median_ms": {k: round(median(v) * 1000, 3) for k, v in stages.items()},
            "onnx_queries": retriever.embedder._onnx is not None, "peak_rss_bytes": peak_rss_self()}


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("ingest", "reader"):
        sys.exit("usage: python -m eval.bench.scale_child ingest|reader SPEC.json")
    spec = json.loads(Path(sys.argv[2]).read_text())
    figures = ingest_child(spec) if sys.argv[1] == "ingest" else reader_child(spec)
    Path(spec["result"]).with_suffix(f".{sys.argv[1]}.json").write_text(json.dumps(figures))
