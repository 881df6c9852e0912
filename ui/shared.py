"""The models and indexes the web app and the API share between sessions: one `AnswererPool`.

Gradio and the API run handlers on a thread pool, so several answers can be in flight at
once. Each shared class guards itself, so nothing here reaches into another object:

- `rag.index.embeddings.Embedder.encode` runs one call at a time per embedder (the model and its
  tokenizer are not safe to call from two threads at once);
- `rag.answer.support.SupportChecker` (an `Answerer`'s `.support`) keeps its sentence-vector cache under its own lock;
- `rag.search.retrieval.Retriever.index` / ``refresh`` reload the lexical index and Chroma client under
  its lock, once, when another process ingests;
- `rag.llm.LlamaCppBackend.stream` generates under a per-model lock (one KV cache).

The pool hands out an `Answerer` per model name and backend, all sharing one embedder and one retriever,
so models load once, and says which model names a client may pick (`AnswererPool.allows`; `check`
refuses the others with `rag.errors.UnknownModelError` for the web chat and the API alike). Left out:
per-user state (`ui.state`).
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from typing import Any

from rag import models
from rag.answer.answerer import Answerer
from rag.answer.request import with_settings
from rag.errors import UnknownModelError
from rag.index.embeddings import Embedder
from rag.llm import served_models
from rag.search.retrieval import Retriever
from rag.settings import Settings

UNKNOWN_MODEL = "that model is not served here"
UNKNOWN_MODEL_FIX = ("name a bundled model, the configured one, or one the configured Ollama / OpenAI-compatible "
                     "server lists (GET /v1/models); model files are chosen by whoever starts the server "
                     "(RAG_LLM__MODEL)")
SERVED_TTL_S = 30.0  # how long the configured servers' model lists are trusted
_NAME = re.compile(r"^[A-Za-z0-9][\w.:@+-]*(?:/[A-Za-z0-9][\w.:@+-]*)*$")  # 'llama3.2:1b', 'hf.co/a/b:Q4'; no path


class AnswererPool:
    """One `Answerer` per (model, backend) (None: the configured one), sharing embedder and retriever.

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
        self._answerers: OrderedDict[tuple[str | None, str | None], Answerer] = OrderedDict()
        if answerer is not None:
            self._answerers[None, None] = answerer
        self._backend = backend  # an rag.llm Backend for the configured model (tests pass a fake)
        self._served: tuple[float, set[str]] | None = None  # (when, names the configured servers listed)

    def get(self, model: str | None = None, backend: str | None = None) -> Answerer:
        """The answerer for ``model`` on ``backend`` (None: the configured ones), configured with both,
        so that it resolves its backend once and keeps it (`rag.answer.answerer.Answerer.backend_for`)."""
        key = (model or None, backend if backend and backend != self.settings.llm.backend else None)
        with self._lock:
            answerer = self._answerers.pop(key, None)
            if answerer is None:
                answerer = Answerer(with_settings(self.settings, key[1], key[0]), retriever=self.retriever,
                                    embedder=self.embedder, backend=self._backend if key == (None, None) else None)
            self._answerers[key] = answerer
            while len(self._answerers) > self.size:
                self._answerers.popitem(last=False)
            return answerer

    @property
    def default(self) -> Answerer:
        return self.get(None)

    def allows(self, model: str, backend: str | None = None) -> bool:
        """Whether a web or API client may pick ``model`` (for ``backend``; None: any).

        Clients name models, never files: the bundled names, the configured ones, and (for Ollama
        and OpenAI-compatible servers) what the configured servers list, asked at most every
        `SERVED_TTL_S` seconds. A path, even one the settings hold for llama.cpp, is the operator's
        choice (RAG_LLM__MODEL, the CLI), and a client gets it only as the configured default."""
        llm = self.settings.llm
        if model in models.BUNDLED or model == llm.model:
            return True
        if backend in ("llamacpp", "extractive") or models.is_local_model(model) or not _NAME.match(model):
            return False
        return model in (llm.ollama_model, llm.openai_model) or model in self.served()

    def check(self, model: str, backend: str | None = None, fix: str = UNKNOWN_MODEL_FIX) -> None:
        """`UnknownModelError` (``param="model"``, 404 from the API) unless a client may pick ``model``
        (`allows`): the web chat and the API refuse a name the same way. The name is not echoed (it
        may be a path on this server)."""
        if not self.allows(model, backend):
            raise UnknownModelError(UNKNOWN_MODEL, fix, param="model")

    def served(self) -> set[str]:
        """`rag.llm.served_models`, cached for `SERVED_TTL_S` seconds."""
        with self._lock:
            if self._served is None or time.monotonic() - self._served[0] > SERVED_TTL_S:
                self._served = (time.monotonic(), served_models(self.settings.llm))
            return self._served[1]
