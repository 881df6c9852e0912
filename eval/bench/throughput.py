"""``rag bench`` step 7: embedding throughput per backend and batch size, and one query's latency.

`bench_throughput`: chunks/s and chars/s per (backend, batch size); sentence-transformers' ONNX
and OpenVINO backends when installable, ONNX Runtime on our own export (fp32, int8) always, with
its worst cosine to torch's vectors, and a recommendation that changes the default only when it
is faster every round. Left out: tokenization (`eval.bench.tokenization`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench.figures import Log, median, table_row

SAME_VECTORS_COSINE = 0.999  # a backend below this (worst cosine to torch) changes retrieval: not recommended
ONNX_NOTE = ("sentence-transformers[onnx] needs optimum-onnx, whose releases on PyPI (<= 0.1.0) require "
             "transformers<4.58; this project pins transformers 5.24.0 "
             "(ONNX Runtime on our own export is measured instead)")
OPENVINO_NOTE = ("sentence-transformers[openvino] needs optimum-intel>=2: 2.2.0 requires transformers<5.6, "
                 "2.0-2.1 require safetensors<0.8; this project pins transformers 5.24.0, safetensors 0.8.0")


def bench_throughput(embedder: Any, texts: Sequence[str], work: Path,
                     batch_sizes: Sequence[int] = (16, 32, 64, 128),
                     backends: Sequence[str] = ("torch", "onnx", "openvino"), rounds: int = 3,
                     log: Log = print) -> dict[str, Any]:
    """chunks/s and chars/s per (backend, batch size), configurations interleaved per round.
    sentence-transformers' ONNX/OpenVINO backends when installable; ONNX Runtime on our own
    export (fp32, int8) always, with its worst cosine to torch's vectors."""
    from sentence_transformers import SentenceTransformer

    texts = list(texts)
    chars = sum(map(len, texts))
    models: dict[str, Any] = {"torch": embedder.model}
    notes: dict[str, str] = {}
    for backend in backends:
        if backend == "torch":
            continue
        try:
            models[backend] = SentenceTransformer(str(embedder.path), backend=backend,  # type: ignore[arg-type]
                                                  local_files_only=True,
                                                  device=embedder.settings.device)
        except Exception as err:  # noqa: BLE001 - an uninstallable backend is a finding, not a crash
            why = ONNX_NOTE if backend == "onnx" else OPENVINO_NOTE
            notes[backend] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]} ({why})"
    quality: dict[str, float] = {}
    for name, model in _ort_models(embedder, texts, work, notes).items():
        models[name] = model
        quality[name] = _min_cosine(embedder.model, model, texts)
    default_bs = embedder.settings.batch_size
    configs = [(b, bs) for b in models for bs in (batch_sizes if b == "torch" else [default_bs])]
    for model in models.values():
        model.encode(texts[:8], normalize_embeddings=True, show_progress_bar=False)
    times: dict[str, list[float]] = {f"{b}/{bs}": [] for b, bs in configs}
    for r in range(rounds):
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        for backend, bs in order:
            log(f"throughput: round {r + 1}/{rounds}, {backend} batch {bs}")
            start = time.perf_counter()
            models[backend].encode(texts, batch_size=bs, normalize_embeddings=True, convert_to_numpy=True,
                                   show_progress_bar=False)
            times[f"{backend}/{bs}"].append(time.perf_counter() - start)
    results: list[dict[str, Any]] = []
    for backend, bs in configs:
        m = median(times[f"{backend}/{bs}"])
        results.append({"backend": backend, "batch_size": bs, "seconds": times[f"{backend}/{bs}"],
                        "chunks_per_s": len(texts) / m, "chars_per_s": chars / m})
    ref = next((r for r in results if r["backend"] == "torch" and r["batch_size"] == default_bs), results[0])
    # a backend whose vectors differ from torch's (int8) would need a quality eval first: not a candidate
    same_vectors = [r for r in results if quality.get(r["backend"], 1.0) >= SAME_VECTORS_COSINE]
    best = max(same_vectors, key=lambda r: r["chunks_per_s"])
    margin = best["chunks_per_s"] / ref["chunks_per_s"] - 1
    separated = max(best["seconds"]) < min(ref["seconds"])  # its slowest round beat the default's fastest
    if best is ref or margin < 0.05 or not separated:
        pick = ref
        reason = (f"keep {ref['backend']}/batch {ref['batch_size']}: the best configuration "
                  f"({best['backend']}/batch {best['batch_size']}) is {margin:+.1%} faster, within noise "
                  f"(needs +5% and every round faster)")
    else:
        pick = best
        reason = (f"{best['backend']}/batch {best['batch_size']} is {margin:+.1%} faster than the current default, "
                  "every round")
    rows = [table_row(f"embedding {r['backend']}, batch {r['batch_size']}", f"{r['chunks_per_s']:.1f} chunks/s",
                      f"{ref['chunks_per_s']:.1f} chunks/s at {ref['backend']}/{ref['batch_size']}"
                      + (f"; min cosine to torch {quality[r['backend']]:.4f}" if r["backend"] in quality else ""),
                      r["chunks_per_s"] / ref["chunks_per_s"], "-", "info") for r in results]
    rows += [table_row(f"embedding {b} backend", "-", "-", None, "-", "skipped") for b in notes]
    query = _query_latency(embedder, models.get("onnxruntime"), texts, rounds)
    if query:
        rows.append(table_row("one query embedded: onnxruntime", f"{query['onnx_ms']:.1f} ms",
                              f"{query['torch_ms']:.1f} ms torch (sentence-transformers encode)",
                              query["onnx_ms"] / query["torch_ms"], "-", "info"))
    return {"texts": len(texts), "chars": chars, "rounds": rounds, "results": results, "notes": notes,
            "min_cosine_to_torch": quality, "query_latency": query,
            "recommendation": {"backend": pick["backend"], "batch_size": pick["batch_size"], "reason": reason},
            "rows": rows}


class _OrtModel:
    """A sentence-transformers-like ``encode`` over one ONNX Runtime export of the embedder
    (batches of the embedder's ``batch_size``, the only size the sweep runs other backends at)."""

    def __init__(self, embedder: Any, path: Path) -> None:
        from rag.index.onnx_encoder import OnnxEncoder

        self.embedder, self.encoder = embedder, OnnxEncoder(path)

    def encode(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        return self.embedder._encode_onnx(list(texts), self.encoder)


def _ort_models(embedder: Any, texts: Sequence[str], work: Path, notes: dict[str, str]) -> dict[str, Any]:
    """ONNX Runtime on our export (rag.index.onnx_encoder), fp32 and int8 (dynamic quantisation):
    what sentence-transformers' own ONNX backend would run, without its optimum pin."""
    path = embedder._onnx_path
    if path is None:
        notes["onnxruntime"] = "RAG_EMBEDDING__ONNX_QUERIES is off"
        return {}
    if not path.is_file():
        embedder._export_onnx(list(texts[:8]))
    if not path.is_file():
        notes["onnxruntime"] = "the ONNX export failed (see the log)"
        return {}
    models = {"onnxruntime": _OrtModel(embedder, path)}
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8 = work / "embedder-int8.onnx"
        quantize_dynamic(str(path), str(int8), weight_type=QuantType.QInt8)
        models["onnxruntime-int8"] = _OrtModel(embedder, int8)
    except Exception as err:  # noqa: BLE001 - a finding, not a crash
        notes["onnxruntime-int8"] = f"{type(err).__name__}: {str(err)[:160]}"
    return models


def _min_cosine(reference: Any, model: Any, texts: Sequence[str]) -> float:
    """The worst cosine between a backend's vectors and torch's on the same texts."""
    a = reference.encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
    b = model.encode(list(texts))
    return float((a * b).sum(axis=1).min())


def _query_latency(embedder: Any, ort: Any, texts: Sequence[str], rounds: int) -> dict[str, float] | None:
    """Median time to embed one query (a chunk's first 80 characters) with torch and with ONNX Runtime."""
    if ort is None:
        return None
    queries = [t[:80] for t in texts[:40]]
    torch_s, onnx_s = [], []
    for _ in range(rounds):
        for q in queries:
            start = time.perf_counter()
            embedder.model.encode([q], normalize_embeddings=True, show_progress_bar=False)
            torch_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            ort.encode([q])
            onnx_s.append(time.perf_counter() - start)
    return {"queries": len(queries) * rounds, "torch_ms": median(torch_s) * 1000, "onnx_ms": median(onnx_s) * 1000}


