"""The models and indexes the web app and the API share between sessions: one `AnswererPool`.

Gradio and the API run handlers on a thread pool, so several answers can be in flight at
once. Each shared class guards itself, so nothing here reaches into another object:

- `rag.embeddings.Embedder.encode` runs one call at a time per embedder (the model and its
  tokenizer are not safe to call from two threads at once);
- `rag.support.SupportChecker` (an `Answerer`'s `.support`) keeps its sentence-vector cache under its own lock;
- `rag.retrieval.Retriever.index` / ``refresh`` reload the lexical index and Chroma client under
  its lock, once, when another process ingests;
- `rag.llm.LlamaCppBackend.stream` generates under a per-model lock (one KV cache).

The pool hands out an `Answerer` per model name, all sharing one embedder and one retriever,
so models load once. Left out: per-user state (`ui.state`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from rag.answer import Answerer
from rag.embeddings import Embedder
from rag.retrieval import Retriever
from rag.settings import Settings


class AnswererPool:
    """One `Answerer` per model name (None: the configured one), sharing embedder and retriever.

    ``backend`` replaces the configured backend of the default answerer (tests pass a fake,
    as httpx tests pass a transport); ``answerer`` is an already built default answerer whose
    embedder and retriever the others share. Bounded: at most ``size`` model names are kept
    (least recently used dropped), so a user typing model names cannot grow memory without limit.
    """

    def __init__(self, settings: Settings, embedder: Embedder | None = None, retriever: Retriever | None = None,
                 size: int = 4, backend: Any | None = None, answerer: Answerer | None = None) -> None:
        self.settings = settings
        self.embedder = answerer.embedder if answerer else embedder or Embedder(settings.embedding)
        self.retriever = answerer.retriever if answerer else retriever or Retriever(settings, embedder=self.embedder)
        self.size = size
        self._lock = threading.Lock()
        self._answerers: OrderedDict[str | None, Answerer] = OrderedDict()
        if answerer is not None:
            self._answerers[None] = answerer
        self._backend = backend  # an rag.llm Backend for the configured model (tests pass a fake)

    def get(self, model: str | None = None) -> Answerer:
        model = model or None
        with self._lock:
            answerer = self._answerers.pop(model, None)
            if answerer is None:
                cfg = self.settings if model is None else self.settings.model_copy(
                    update={"llm": self.settings.llm.model_copy(update={"model": model})})
                answerer = Answerer(cfg, retriever=self.retriever, embedder=self.embedder,
                                    backend=self._backend if model is None else None)
            self._answerers[model] = answerer
            while len(self._answerers) > self.size:
                self._answerers.popitem(last=False)
            return answerer

    @property
    def default(self) -> Answerer:
        return self.get(None)
