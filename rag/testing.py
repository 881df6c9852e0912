"""Test doubles with the real interfaces, shipped with the package (like httpx's ``MockTransport``):
``ScriptedBackend`` is an answer backend whose replies are scripted, so the answer step, the
conversations and every interface can be tested without a model.

    >>> backend = ScriptedBackend("ZQRT is fast [1].", verdict="yes")
    >>> "".join(backend.stream([], max_tokens=8, temperature=0.0))
    'ZQRT is fast [1].'
    >>> backend.choose([], ["yes", "no"]), [call[0] for call in backend.calls]
    ('yes', ['stream', 'choose'])

Left out: real generation (``rag.llm``). Nothing here is used by the library itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from rag.llm import Message, StreamInterrupted, approx_tokens, pick

__all__ = ["ScriptedBackend"]


class ScriptedBackend:
    """A ``rag.llm.Backend`` that streams ``reply`` word by word.

    ``reply`` may be a function of the messages (e.g. to answer a condensation prompt differently
    from an answer prompt); ``verdict`` is what ``choose`` returns; ``fail_after`` raises
    ``StreamInterrupted`` after that many words, as a dropped connection would. Every call is
    recorded in ``calls`` as ``(kind, messages)``.
    """

    def __init__(self, reply: str | Callable[[list[Message]], str] = "", *, verdict: str | None = "yes",
                 fail_after: int | None = None, name: str = "llamacpp", model: str = "scripted",
                 capable: bool = True, context_window: int = 4096, prompt_budget: int = 1400) -> None:
        self.reply, self.verdict, self.fail_after = reply, verdict, fail_after
        self.name, self.model, self.capable = name, model, capable
        self.context_window, self._budget = context_window, prompt_budget
        self.calls: list[tuple[str, list[Message]]] = []

    @property
    def prompt_budget(self) -> int:
        return self._budget

    def describe(self) -> str:
        return f"scripted model {self.model}"

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    def check(self) -> None:
        pass

    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float,
               stop: list[str] | None = None, cite: Sequence[int] = ()) -> Iterator[str]:
        self.calls.append(("stream", list(messages)))
        reply = self.reply(list(messages)) if callable(self.reply) else self.reply
        sent = ""
        for i, word in enumerate(re.findall(r"\S+\s*", reply)):
            if self.fail_after is not None and i == self.fail_after:
                raise StreamInterrupted("connection dropped", "retry", sent)
            sent += word
            yield word

    def choose(self, messages: list[Message], options: Sequence[str]) -> str | None:
        self.calls.append(("choose", list(messages)))
        return pick(self.verdict or "", options)
