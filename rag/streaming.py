"""What of an answer may be shown while it is being written, before the full check has run.

Words stream as the model writes them, except from the point where a sentence states a
specific (a number or a name the question did not hold): the rest of that sentence is held until
it ends, then shown only if some prompted abstract holds each of its specifics. A sentence that
invents "a learning rate of 0.001" is never on screen, not even for a second; the full check
(`rag.support`, entailment included) runs on the finished answer, which replaces the streamed
text.

    >>> gate = StreamGate("How many experts does Skywork-MoE have?", ["Skywork-MoE has 16 experts."])
    >>> [gate.feed(d) for d in ["Skywork-MoE uses ", "16 experts [1]. It ", "was trained at lr 0.001 [1]."]]
    ['Skywork-MoE uses ', '16 experts [1]. It ', 'was trained at lr ']
    >>> gate.close(), gate.held
    ('', ['It was trained at lr 0.001 [1].'])

Left out: the check of the finished answer (`rag.support`), where the text goes (`rag.answer`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.support import anchors, holds, numbers_in

# a sentence's end: its stop, and the citation markers after it
_END = re.compile(r"[.!?\u3002\uff01\uff1f](?:\s*\[[\d,;\s-]+\])*$")


class StreamGate:
    """Feed it the model's deltas; it returns the text that may be shown now."""

    def __init__(self, given: str, texts: Sequence[str]) -> None:
        self.given_numbers, self.given_names = numbers_in(given), anchors(given)
        self.texts = [t.lower() for t in texts]
        self.pending = ""  # the current sentence from its first specific on
        self.sentence = ""  # the current sentence so far (shown part included)
        self.held: list[str] = []  # sentences never shown

    def specifics(self, text: str) -> set[str]:
        """Numbers and names of ``text`` that the question did not hold."""
        names = {a for a in anchors(text) if not a.replace(".", "").isdigit()}
        return (numbers_in(text) - self.given_numbers) | (names - self.given_names)

    def feed(self, delta: str) -> str:
        # word by word: a sentence may end inside a delta
        return "".join(self._word(piece) for piece in re.split(r"(?<=\s)", delta) if piece)

    def _word(self, piece: str) -> str:
        self.sentence += piece
        ended = (piece[-1].isspace() or piece[-1] in "\u3002\uff01\uff1f") and _END.search(self.sentence.rstrip())
        if self.pending or self.specifics(self.sentence):
            self.pending += piece
            return self._release() if ended else ""
        if ended:
            self.sentence = ""
        return piece

    def _release(self) -> str:
        text, sentence, self.pending, self.sentence = self.pending, self.sentence, "", ""
        if any(not any(holds(t, s) for t in self.texts) for s in self.specifics(sentence)):
            self.held.append(sentence.strip())
            return ""
        return text

    def close(self) -> str:
        """What is left at the end of the answer (a last sentence held for its specifics)."""
        return self._release() if self.pending else ""


__all__ = ["StreamGate"]
