"""Per-browser-session state: the settings panel's values, one user's conversation, the answer being
made (so the Stop button can end it) and the notes already shown.

A `Session` lives in a ``gr.State`` (created on the first event of a browser tab, dropped
by Gradio when the tab goes away); nothing here is module-global, so two users never
see each other's history or settings. `ChatSettings` clamps what the settings panel sends
(typed, within the limits of the `Settings`: ``retrieval.max_k`` for the Papers slider) and
turns it, with a question, into the `rag.answer.request.AskRequest` every interface builds.

Left out: rendering (`ui.render`) and the event handlers (`ui.app`).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from rag.answer.answer_result import Answer
from rag.answer.answerer import Answerer
from rag.answer.request import AskRequest
from rag.chat import Conversation, Turn
from rag.llm import backend_names
from rag.notices import Notices
from rag.settings import Settings

_MODEL_NAME = re.compile(r"^[\w.:/@+-]{1,200}$")


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass
class ChatSettings:
    """What the settings panel controls, for one session."""

    backend: str = "auto"
    model: str = ""
    k: int = 5
    dense_weight: float = 0.5
    temperature: float = 0.0
    year_from: int | None = None
    year_to: int | None = None
    author: str = ""
    category: str = ""

    @classmethod
    def defaults(cls, settings: Settings) -> ChatSettings:
        return cls(backend=settings.llm.backend, model="", k=settings.answer.max_context_papers,
                   dense_weight=settings.retrieval.dense_weight, temperature=settings.llm.temperature)

    @classmethod
    def parse(cls, settings: Settings, backend: Any = None, model: Any = None, k: Any = None,
              dense_weight: Any = None, temperature: Any = None, year_from: Any = None, year_to: Any = None,
              author: Any = None, category: Any = None) -> ChatSettings:
        """Panel values (possibly missing or malformed, e.g. from an API client) -> valid settings."""
        d = cls.defaults(settings)
        backend = backend if backend in backend_names() else d.backend  # plug-ins' names included
        model = str(model or "").strip()
        if model and (not _MODEL_NAME.match(model) or model.lower().endswith(".gguf")):
            model = ""  # a web user names models, never files on the server
        kv, dw, temp = _number(k), _number(dense_weight), _number(temperature)
        y0, y1 = _number(year_from), _number(year_to)
        return cls(
            backend=backend, model=model,
            k=int(min(max(kv, 1), settings.retrieval.max_k)) if kv is not None else d.k,
            dense_weight=min(max(dw, 0.0), 1.0) if dw is not None else d.dense_weight,
            temperature=min(max(temp, 0.0), 2.0) if temp is not None else d.temperature,
            year_from=int(y0) if y0 else None, year_to=int(y1) if y1 else None,
            author=str(author or "").strip()[:200], category=str(category or "").strip()[:100],
        )

    def request(self, settings: Settings, question: str) -> AskRequest:
        """``question`` asked with these settings, checked (`AskRequest.of`: an empty question, or a
        year range that runs backwards, is an `rag.errors.InputError` with its fix)."""
        years = f"{self.year_from or ''}..{self.year_to or ''}" if self.year_from or self.year_to else None
        # the slider left at its default reads as many papers as the question needs (a "which papers"
        # list reads answer.list_papers, as in rag ask and the API), a moved one exactly its value
        k = None if self.k == settings.answer.max_context_papers else self.k
        return AskRequest.of(settings, question, backend=self.backend, model=self.model, k=k, year=years,
                             author=self.author, category=self.category, temperature=self.temperature,
                             dense_weight=self.dense_weight)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TurnRecord:
    """What feedback on one assistant message refers to."""

    answer_id: str
    answer: Answer
    settings: ChatSettings
    time: float = field(default_factory=time.time)
    rating: str | None = None


@dataclass
class Session:
    """One browser tab: its conversation, chat messages, settings and rated answers."""

    conversation: Conversation
    settings: ChatSettings
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    messages: list[dict[str, Any]] = field(default_factory=list)   # what the Chatbot shows
    records: dict[int, TurnRecord] = field(default_factory=dict)   # assistant message index -> turn
    last_rated: int | None = None
    busy: threading.Lock = field(default_factory=threading.Lock)    # one answer at a time per tab
    stop_requested: threading.Event = field(default_factory=threading.Event)  # the Stop button, for the answer now
    notices: Notices = field(default_factory=Notices)               # each note once per tab

    @classmethod
    def new(cls, answerer: Answerer, settings: Settings) -> Session:
        return cls(Conversation(answerer), ChatSettings.defaults(settings))

    def detach(self, turns: list[Turn], numbers: dict[str, int]) -> None:
        """A fresh `Conversation` holding ``turns`` and ``numbers`` (as before a stopped answer): the
        stopped answer's thread may still finish into the old one, which nothing reads any more."""
        old = self.conversation
        self.conversation = Conversation(old.answerer, old.memory_tokens)
        self.conversation.turns, self.conversation.numbers = list(turns), dict(numbers)

    def reset(self) -> None:
        self.conversation.reset()
        self.messages.clear()
        self.records.clear()
        self.last_rated = None
