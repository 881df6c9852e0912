"""What of an answer may be shown while it is being written, before the full check has run.

Words stream as the model writes them, a whole word at a time, until a sentence states a specific
(a number or a name the question did not hold) that no prompted abstract holds: the rest of that
sentence is held, and never shown. A sentence that invents "a learning rate of 0.001" is never on
screen, not even for a second. A value that an abstract holds streams on; whether the sentence
states it of the right thing is for the full check (`rag.answer.support`, entailment included), which
runs on the finished answer and replaces the streamed text.

    >>> gate = StreamGate("How many experts does Skywork-MoE have?", ["Skywork-MoE has 16 experts."])
    >>> [gate.feed(d) for d in ["Skywork-MoE uses ", "16 exp", "erts [1]. It ", "was trained at lr 0.001 [1]."]]
    ['Skywork-MoE uses ', '16 ', 'experts [1]. It ', 'was trained at lr ']
    >>> gate.close(), gate.held
    ('', ['It was trained at lr 0.001 [1].'])

A number an abstract holds, stated beside other words, is held too ("16" counts experts):

    >>> gate = StreamGate("What batch size does Skywork-MoE use?", ["Skywork-MoE has 16 experts."])
    >>> gate.feed("Its batch size is 16 [1]. "), gate.close(), gate.held
    ('Its batch size is ', '', ['Its batch size is 16 [1].'])

A question asking for a value (``wants_value``: "How many experts ...?") holds each sentence until it
states a value the question did not give: a sentence that answers it only with the question's own
words ("The 11B Flipped model was meta-trained for 11B steps [1].", asked for how many steps the
11B model trained) puts a number where none was stated, and the full check abstains on it:

    >>> gate = StreamGate("For how many steps was the 11B model trained?", ["The 11B model is strong."],
    ...                   wants_value=True)
    >>> gate.feed("The 11B model was trained for 11B steps [1]. "), gate.held
    ('', ['The 11B model was trained for 11B steps [1].'])
    >>> gate.feed("It took 12 "), gate.feed("steps [1]. ")
    ('', '')

(12 is no abstract's: held too.) A value an abstract holds releases the sentence up to it:

    >>> gate = StreamGate("How many experts does Skywork-MoE have?", ["Skywork-MoE has 16 experts."],
    ...                   wants_value=True)
    >>> gate.feed("Skywork-MoE has "), gate.feed("16 experts [1]. ")
    ('', 'Skywork-MoE has 16 experts [1]. ')

Left out: the check of the finished answer (`rag.answer.support`), where the text goes (`rag.answer.answerer`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.answer.claims import (
    anchors,
    claimed_roles,
    held_form,
    holds,
    in_role,
    number_roles,
    specifics,
    states_a_value,
)

_WORD_END = re.compile(r"\s+|[\u3002\uff01\uff1f\uff0c\u3001]")  # after a space, or CJK punctuation
# a sentence's end: its stop, and the citation markers after it
_END = re.compile(r"[.!?\u3002\uff01\uff1f](?:\s*\[[\d,;\s-]+\])*$")


class StreamGate:
    """Feed it the model's deltas; it returns the text that may be shown now, a whole word at a time."""

    def __init__(self, given: str, texts: Sequence[str], wants_value: bool = False) -> None:
        self.given = given
        self.wants_value = wants_value  # hold each sentence until it states a value ``given`` lacks
        self.texts = [t.lower() for t in texts]
        self.roles = [number_roles(t) for t in self.texts]
        self.word = ""  # the word being written (a delta may end inside one)
        self.sentence = ""  # the current sentence so far (shown part included)
        self.pending = ""  # the part of it held, from its first unheld specific on
        self.held: list[str] = []  # sentences never shown

    def unheld(self, text: str) -> set[str]:
        """The numbers and names ``text`` adds to the question (`rag.answer.claims.specifics`) that no
        prompted abstract holds; a number in English text only counts as held beside a word ``text``
        puts beside it (`rag.answer.claims.in_role`: "a batch size of 16" is not "16 experts")."""
        added = specifics(text, self.given)
        claimed = claimed_roles(text) if added else {}
        naming = self.naming(text) if claimed else []
        return {s for s in added if not any(holds(t, s) for t in self.texts)
                or s in claimed and not any(in_role(s, claimed, roles) for roles in naming)}

    def naming(self, text: str) -> list[dict[str, set[str]]]:
        """The `number_roles` of the abstracts that name everything ``text`` names: only those hold its
        numbers ("EvoLM ... 2 trillion tokens" is not held by PLaMo-100B's "2 trillion tokens")."""
        names = {held_form(a, self.texts) for a in anchors(text) if not a.replace(".", "").isdigit()}
        return [roles for t, roles in zip(self.texts, self.roles) if all(holds(t, a) for a in names)]

    def feed(self, delta: str) -> str:
        self.word += delta
        out = []
        while m := _WORD_END.search(self.word):
            word, self.word = self.word[:m.end()], self.word[m.end():]
            out.append(self._word(word))
        return "".join(out)

    def waiting(self, sentence: str) -> bool:
        """The sentence (so far) has yet to state the value the question asks for."""
        return self.wants_value and not states_a_value(sentence, self.given)

    def _word(self, word: str) -> str:
        unheld_before = bool(self.pending) and not self.waiting(self.sentence)  # held for a specific: to its end
        self.sentence += word
        ended = bool(_END.search(self.sentence.rstrip()))
        if unheld_before or self.unheld(self.sentence) or self.waiting(self.sentence):
            self.pending += word
            return self._release() if ended else ""
        shown, self.pending = self.pending + word, ""  # nothing held, or the awaited value has come
        if ended:
            self.sentence = ""
        return shown

    def _release(self) -> str:
        text, sentence, self.pending, self.sentence = self.pending, self.sentence, "", ""
        if self.unheld(sentence) or self.waiting(sentence):
            self.held.append(sentence.strip())
            return ""
        return text

    def close(self) -> str:
        """What is left at the end of the answer (its last word, a last sentence held for its specifics)."""
        word, self.word = self.word, ""
        shown = self._word(word) if word else ""
        return shown + (self._release() if self.pending else "")


__all__ = ["StreamGate"]
