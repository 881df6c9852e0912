"""The models and indexes the web app shares between sessions, made safe to use from threads.

Gradio runs event handlers on a thread pool, so several answers can be in flight at
once. What is shared, and how each piece is guarded:

- the sentence-transformers model: `LockedEmbedder.encode` holds one re-entrant lock
  (torch modules and their tokenizer are not safe to call from two threads at once);
- the `Answerer`'s sentence-vector cache (an ``OrderedDict`` that evicts):
  `SharedAnswerer.support_scores` holds the same lock;
- the retriever's lexical index and Chroma client, swapped when another process
  ingests: `SharedRetriever.index` refreshes under a lock;
- the llama.cpp model: `rag.llm.LlamaCppBackend.stream` already generates under a
  per-model lock (one KV cache); its ``count_tokens`` only reads the vocabulary.

One `AnswererPool` per process hands out an `Answerer` per model name, all sharing one
embedder and one retriever, so models load once. Left out: per-user state (`ui.state`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rag.answer import Answerer
from rag.embeddings import Embedder
from rag.retrieval import Retriever
from rag.settings import Settings

ENCODE_LOCK = threading.RLock()


class LockedEmbedder(Embedder):
    """An `Embedder` whose ``encode`` (and so ``encode_query``) runs one call at a time."""

    def encode(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        with ENCODE_LOCK:
            return super().encode(texts, on_batch=on_batch)

    @classmethod
    def wrap(cls, embedder: Embedder) -> LockedEmbedder:
        """A locked view of an already loaded embedder (shares its model, no reload)."""
        if isinstance(embedder, cls):
            return embedder
        locked = cls.__new__(cls)
        locked.__dict__.update(embedder.__dict__)
        return locked

    def warm(self) -> None:
        """Load the model now rather than in the first user's request."""
        self.encode(["warm up"])


class SharedRetriever(Retriever):
    """A `Retriever` whose lexical index / store refresh happens under a lock."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._refresh_lock = threading.Lock()

    def index(self):  # type: ignore[no-untyped-def]
        with self._refresh_lock:
            return super().index()

    def refresh(self):  # type: ignore[no-untyped-def]
        """The lexical index, checked for new papers now (after an upload) rather than within a second."""
        with self._refresh_lock:
            self._checked_at = float("-inf")
            return super().index()


class SharedAnswerer(Answerer):
    """An `Answerer` whose evidence scoring (and its vector cache) is serialised."""

    def support_scores(self, claims: list[str], sentences: list[str]) -> np.ndarray:
        with ENCODE_LOCK:
            return super().support_scores(claims, sentences)


class AnswererPool:
    """One `Answerer` per model name (None: the configured one), sharing embedder and retriever.

    ``backend`` replaces the configured backend of the default answerer (tests pass a fake,
    as httpx tests pass a transport). Bounded: at most ``size`` model names are kept (least recently used dropped), so a
    user typing model names cannot grow memory without limit.
    """

    def __init__(self, settings: Settings, embedder: Embedder | None = None, retriever: Retriever | None = None,
                 size: int = 4, backend: Any | None = None) -> None:
        self.settings = settings
        self.embedder = LockedEmbedder.wrap(embedder) if embedder else LockedEmbedder(settings.embedding)
        self.retriever = retriever or SharedRetriever(settings, embedder=self.embedder)
        self.size = size
        self._lock = threading.Lock()
        self._answerers: OrderedDict[str | None, Answerer] = OrderedDict()
        self._backend = backend  # an rag.llm Backend for the configured model (tests pass a fake)

    def get(self, model: str | None = None) -> Answerer:
        model = model or None
        with self._lock:
            answerer = self._answerers.pop(model, None)
            if answerer is None:
                cfg = self.settings if model is None else self.settings.model_copy(
                    update={"llm": self.settings.llm.model_copy(update={"model": model})})
                answerer = SharedAnswerer(cfg, retriever=self.retriever, embedder=self.embedder,
                                          backend=self._backend if model is None else None)
            self._answerers[model] = answerer
            while len(self._answerers) > self.size:
                self._answerers.popitem(last=False)
            return answerer

    @property
    def default(self) -> Answerer:
        return self.get(None)
