"""Which of an answer's notes a reader is shown: each note once per reader, and the backend's only
when a model ran.

The backend's notes (``answering with bundled Qwen2.5-Coder...: Ollama not reachable at ...``)
say how answers are made; shown on every answer, and on abstentions where no model ran at all, they
read as an error. A reader (one web chat session, one terminal process) sees each note once, and
the backend's the first time a model (or the extractive fallback) actually answered.

    >>> from types import SimpleNamespace as NS
    >>> seen = Notices()
    >>> abstained = NS(notes=["answering with X", "3 papers have no year"], generated="", verdict=None)
    >>> seen.fresh(abstained, backend_notes=["answering with X"])
    ['3 papers have no year']
    >>> answered = NS(notes=["answering with X", "3 papers have no year"], generated="Y [1].", verdict="yes")
    >>> seen.fresh(answered, backend_notes=["answering with X"]), seen.fresh(answered, ["answering with X"])
    (['answering with X'], [])

Left out: where notes come from (`rag.llm.select_backend`, `rag.search.retrieval`), how they are drawn.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def model_ran(answer: Any) -> bool:
    """Whether anything wrote or judged this answer: a model's text or verdict, or the extractive
    fallback's quotes (an abstention decided before any generation has none)."""
    return bool(answer.generated) or answer.verdict is not None


class Notices:
    """The notes one reader has been shown."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def fresh(self, answer: Any, backend_notes: Iterable[str] = ()) -> list[str]:
        """The answer's notes this reader has not seen, leaving out the backend's unless a model ran."""
        backend = set(backend_notes)
        out = [n for n in dict.fromkeys(answer.notes)
               if n not in self.seen and (n not in backend or model_ran(answer))]
        self.seen.update(out)
        return out

    def clear(self) -> None:
        self.seen.clear()


__all__ = ["Notices", "model_ran"]
