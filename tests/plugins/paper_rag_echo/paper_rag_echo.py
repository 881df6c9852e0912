"""``echo``: a paper-rag answer backend from outside paper-rag, for tests/test_plugins.py.

It answers with the first sentence of the first source in its prompt, followed by that source's
citation marker, so the answer passes paper-rag's support check without a model. It reads the
``llm`` settings it is given (``max_new_tokens``) and implements `rag.backends.base.Backend`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

SOURCE = re.compile(r"^\[(\d+)\] [^\n]*\n<<<(\S+)\n(.*?)\n\2>>>", re.M | re.S)


class EchoBackend:
    name = "echo"
    model = "echo-1"
    capable = False  # no verdicts, no condensed follow-ups
    context_window = 4096

    def __init__(self, settings: Any) -> None:
        self.max_new_tokens = settings.max_new_tokens

    @property
    def prompt_budget(self) -> int:
        return self.context_window - self.max_new_tokens

    def describe(self) -> str:
        return "the echo plug-in (quotes its first source)"

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / 4)

    def check(self) -> None:
        pass

    def stream(self, messages: list[Any], *, max_tokens: int, temperature: float, stop: list[str] | None = None,
               cite: Sequence[int] = ()) -> Iterator[str]:
        found = SOURCE.search(messages[-1].content)
        if found is None:
            yield "No source was given."
            return
        number, text = found.group(1), found.group(3).strip()
        sentence = re.split(r"(?<=[.!?])\s+", text)[0].rstrip(".")
        yield from re.findall(r"\S+\s*", f"{sentence} [{number}].")

    def choose(self, messages: list[Any], options: Sequence[str]) -> str | None:
        return None

    def structured(self, messages: list[Any], schema: dict[str, Any], max_tokens: int) -> str:
        return "null"
