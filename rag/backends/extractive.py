"""The ``extractive`` backend: no model. It writes nothing (``generates = False``); the answer
step quotes the abstract sentences nearest the question instead (`rag.answer.answerer`), so it is what
``auto`` falls back to when no model is available, and what ``RAG_LLM__BACKEND=extractive`` asks for.

It is a backend like the others so that every caller holds one (its ``name``, ``model`` and
``describe()`` label the answer) instead of checking for ``None``; `rag.backends.base.generates`
tells it apart.

Left out: choosing the sentences (`rag.answer.answerer`); it has no settings block.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from rag.backends.base import LLMCommon, Message, approx_tokens


class ExtractiveBackend:
    """Answers made of sentences quoted from the abstracts: nothing to stream, choose or check."""

    name = "extractive"
    model = "sentence selection"
    capable = False  # no model: no condensed follow-ups, no verdicts
    generates = False
    context_window = 0

    def __init__(self, settings: LLMCommon | None = None) -> None:
        self.settings = settings

    @property
    def prompt_budget(self) -> int:
        return 0

    def describe(self) -> str:
        return "extractive answers (sentences quoted from the abstracts)"

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    def check(self) -> None:
        """Always ready."""

    def stream(
        self, messages: list[Message], *, max_tokens: int, temperature: float, stop: list[str] | None = None,
        cite: Sequence[int] = (),
    ) -> Iterator[str]:
        """Nothing: the answer step composes the quotes itself."""
        return iter(())

    def choose(self, messages: list[Message], options: Sequence[str]) -> str | None:
        return None

    def structured(self, messages: list[Message], schema: dict[str, Any], max_tokens: int) -> str:
        return ""
