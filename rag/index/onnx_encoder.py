"""Query vectors without torch: the embedder exported once to ONNX, run by ONNX Runtime.

A one-shot ``rag search`` or ``rag ask`` embeds one query and a few dozen sentences, yet
loading sentence-transformers imports torch, transformers and scikit-learn: seconds of
start-up for milliseconds of work. The first time a process embeds with the torch model on
a CPU, it exports the whole sentence-transformers pipeline (transformer, pooling, dense
layers, normalisation) with ``torch.onnx.export`` into a cache folder, checks the export's
vectors against torch's on the texts it just embedded (max abs difference 1e-4, otherwise
the file is deleted), and later processes embed small batches with ONNX Runtime and the
Rust tokenizer alone. Vectors agree with torch's to ~1e-7 (fp32, no quantisation).

ONNX Runtime is slower than torch for batches on a CPU, so ingest keeps torch; for one query it
is much faster and needs no torch import (README, Performance, has ``rag bench``'s numbers).

Left out: int8 quantisation (changes vectors: cosine to torch's down to 0.90 on our chunks),
GPU execution providers, and models whose tokenizer has no ``tokenizer.json``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MAX_DIFF = 1e-4  # largest |onnx - torch| accepted on the probe texts
OPSET = 17


def fingerprint(model_dir: Path) -> str:
    """A short hash of the model folder's files (relative path, size, mtime): a changed or
    reinstalled model gets a new export."""
    digest = hashlib.sha1()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(model_dir)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:12]


def export_path(cache_dir: Path, name: str, model_dir: Path) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"
    return cache_dir / "onnx" / f"{safe}-{fingerprint(model_dir)}.onnx"


def export(model: Any, path: Path, probe: Sequence[str]) -> Path:
    """Export a (CPU) SentenceTransformer to ``path`` and check it on ``probe`` texts.

    Writes to a temporary name and renames, so concurrent processes never read half a file.
    Raises ``RuntimeError`` when the export disagrees with torch (the file is not kept).
    """
    import torch

    features = model.preprocess(list(probe)) if hasattr(model, "preprocess") else model.tokenize(list(probe))
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in features]
    extra = {k: v for k, v in features.items() if k not in names and not hasattr(v, "shape")}

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            out = self.model({**extra, **dict(zip(names, tensors))})["sentence_embedding"]
            return torch.nn.functional.normalize(out, p=2, dim=1)

    inputs = tuple(features[k] for k in names)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    pipeline = Pipeline().eval()
    with torch.inference_mode():
        expected = pipeline(*inputs).numpy()
    axes = {**{k: {0: "batch", 1: "tokens"} for k in names}, "sentence_embedding": {0: "batch"}}
    with warnings.catch_warnings():  # tracer notes on shape checks; the probe below is the real check
        warnings.simplefilter("ignore")
        torch.onnx.export(pipeline, inputs, str(tmp), input_names=names, output_names=["sentence_embedding"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    try:
        session = _session(tmp)
        got = session.run(None, {k: features[k].numpy().astype(np.int64) for k in names})[0]
        diff = float(np.abs(got - expected).max())
        if diff > MAX_DIFF:
            raise RuntimeError(f"the ONNX export differs from torch by {diff:.2g} (> {MAX_DIFF})")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """Runs an exported model on tokenized batches (thread-safe: ONNX Runtime sessions are)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.session = _session(path)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Unit-length float32 vectors for one padded batch (``Embedder.token_arrays``)."""
        return self.session.run(None, {name: arrays[name] for name in self.inputs})[0].astype(np.float32, copy=False)


__all__ = ["OnnxEncoder", "export", "export_path", "fingerprint"]
