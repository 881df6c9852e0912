"""How an answer is shown, decided once for every format: `AnswerView`.

Every renderer (`rag.render.terminal`, `rag.render.markdown`, `rag.render.json`, ``ui.render``)
reads these facts here instead of walking the `rag.answer.answer_result.Answer` its own way:

- the answer text cut into pieces (`Segment`), each checked sentence flagged ``unsupported`` (its
  cited abstracts do not support it) or ``uncited`` (a claim citing nothing), keeping the text
  between sentences; an abstention flags nothing. A sentence is found in the text as written, else
  with its spaces and line breaks matched loosely (markers after a line break); when one is not in
  the text at all, the pieces are the checked sentences alone, so a flag is never lost;
- the flagged sentences (`AnswerView.flagged`), hence "2 of 5 sentences not supported";
- the cited numbers, the reason an answer is incomplete, the papers a source list names when an
  abstention cites none (`AnswerView.nearest`, the first `NEAREST_SHOWN`);
- whether a cited paper's evidence supports it (`citation_supported`).

Left out: the marks, words and layout of each format (their own modules).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.answer.answer_result import Answer, Citation
from rag.answer.support import AnswerSentence

UNSUPPORTED, UNCITED = "unsupported", "uncited"
MARKS = {"plain": "[{flag}]", "markdown": "\u26a0 *{flag}*"}  # after a flagged sentence, in text formats
NEAREST_SHOWN = 3  # papers a source list names on an abstention that cites none
INCOMPLETE = "the backend stopped"  # an incomplete answer's reason when its error says none


@dataclass(frozen=True)
class Segment:
    """A piece of the answer text: one checked sentence (``sentence``, with its ``flag``) or the text
    between two."""

    text: str
    sentence: AnswerSentence | None = None
    flag: str | None = None  # UNSUPPORTED | UNCITED | None


def flag_of(sentence: AnswerSentence) -> str | None:
    """``unsupported`` or ``uncited`` for a claim no cited abstract supports, else None."""
    if sentence.supported or not sentence.claim:
        return None
    return UNSUPPORTED if sentence.citations else UNCITED


def _find(text: str, sentence: str, at: int) -> tuple[int, int] | None:
    """Where ``sentence`` is in ``text`` from ``at``: as written, else with any run of spaces and line
    breaks standing for any other."""
    start = text.find(sentence, at)
    if start >= 0:
        return start, start + len(sentence)
    words = sentence.split()
    found = re.compile(r"\s+".join(map(re.escape, words))).search(text, at) if words else None
    return (found.start(), found.end()) if found else None


def segments(answer: Answer) -> list[Segment]:
    """The answer text as pieces, flagged sentences marked (see the module docstring)."""
    text = answer.answer
    if answer.abstained or not answer.sentences:
        return [Segment(text)] if text else []
    out: list[Segment] = []
    at = 0
    for s in answer.sentences:
        span = _find(text, s.text, at)
        if span is None:  # the text was rewritten after the check: the checked sentences alone
            pieces = [Segment(x.text, x, flag_of(x)) for x in answer.sentences]
            return [piece for i, p in enumerate(pieces) for piece in ([Segment(" ")] if i else []) + [p]]
        start, end = span
        if start > at:
            out.append(Segment(text[at:start]))
        out.append(Segment(text[start:end], s, flag_of(s)))
        at = end
    if at < len(text):
        out.append(Segment(text[at:]))
    return out


def citation_supported(citation: Citation, threshold: float) -> bool:
    """Every answer sentence citing this paper is supported by its abstract (evidence at ``threshold``)."""
    return bool(citation.evidence) and all(e.score >= threshold for e in citation.evidence)


@dataclass(frozen=True)
class AnswerView:
    """One answer as every format shows it (build it with `AnswerView.of`)."""

    answer: Answer
    segments: list[Segment]
    flagged: list[AnswerSentence]       # the sentences shown with a flag, in order
    cited_numbers: list[int]
    incomplete_reason: str | None       # None: the answer is complete
    nearest: list[Citation]             # what a source list names when an abstention cites none

    @classmethod
    def of(cls, answer: Answer) -> AnswerView:
        pieces = segments(answer)
        return cls(
            answer=answer, segments=pieces,
            flagged=[p.sentence for p in pieces if p.flag and p.sentence is not None],
            cited_numbers=[c.number for c in answer.citations],
            incomplete_reason=(answer.error or INCOMPLETE) if answer.incomplete or answer.error else None,
            nearest=answer.also_retrieved[:NEAREST_SHOWN] if answer.abstained and not answer.citations else [],
        )

    @property
    def sentence_count(self) -> int:
        return len(self.answer.sentences)

    def marked(self, style: str = "plain") -> str:
        """The answer text with each flagged sentence followed by its mark (`MARKS`: ``plain``
        ``[unsupported]``, ``markdown`` `` ⚠ *unsupported*``)."""
        mark = MARKS[style]
        return "".join(p.text if p.flag is None else f"{p.text} {mark.format(flag=p.flag)}" for p in self.segments)


__all__ = ["INCOMPLETE", "MARKS", "NEAREST_SHOWN", "UNCITED", "UNSUPPORTED", "AnswerView", "Segment",
           "citation_supported", "flag_of", "segments"]
