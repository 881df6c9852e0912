"""One cell of an extraction table: a column's question asked of one abstract, the answer checked.

The model reads the paper's abstract alone and replies with JSON, ``{"value": "..."}`` or
``{"value": null}`` (`VALUE_SCHEMA`: a grammar on llama.cpp, ``format`` on Ollama, the prompt
elsewhere). The value is then checked as an answer sentence citing that paper is
(`rag.answer.support.SupportChecker.check`: the words it adds to the question found in an abstract
sentence, a number the abstract lacks or a name it does not hold rejects it), and one sentence
must state every number and name it gives (`rag.answer.claims.specifics`): that sentence is its
evidence. A value that fails is never shown: the cell is empty, ``supported`` false, with the
reason (the rejected value stays on the object as ``withheld``, out of the JSON).

Without a model (the extractive backend) a cell holds the abstract sentence that best matches the
question, when one matches well enough. The ``code`` column is read from the abstract's links
with no model at all.

    >>> parse_value('{"value": "ImageNet and COCO"}'), parse_value('{"value": null}')
    ('ImageNet and COCO', None)
    >>> parse_value('{"value": "Not stated in the abstract."}'), parse_value('{"value": "58.2% top-1 acc')
    (None, '58.2% top-1 acc')

Left out: which papers and columns (`rag.table.maker`), the cache (`rag.table.cache`), and a model
judge of each cell (an answer's entailment check): one more call per cell, which the cell's
one-sentence rule stands in for.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from rag.answer import prompts
from rag.answer.claims import anchors, answer_sentences, holds, numbers_in, says_no_answer, specifics
from rag.answer.evidence import evidence_text, sentences_of
from rag.answer.support import SupportChecker
from rag.index.corpus import Paper, extract_urls
from rag.llm import Backend, Message
from rag.table.columns import Column

VALUE_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"value": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
    "required": ["value"], "additionalProperties": False,
}
VALUE_TOKENS = 48  # a value is a short phrase: "at most 12 words", with room for names and numbers
# what a cached cell's verdict depends on besides the prompt: change it when `check_value` changes
CHECK_RULES = "check v2: rag.answer.support's check; one sentence states every number and name, the title's aside"
EXTRACTIVE_MATCH = 0.3  # without a model: the best sentence is the value when it scores this against the question
_SILENT = re.compile(r"^(?:null|none|n/?a|unknown|not (?:stated|mentioned|specified|given|reported)\b.*|-+)$", re.I)
_CUT_VALUE = re.compile(r'"value"\s*:\s*"((?:[^"\\]|\\.)*)')


@dataclass
class Cell:
    value: str | None
    evidence: str | None
    supported: bool
    not_stated: bool
    reason: str | None = None
    withheld: str | None = None  # the model's value the check rejected: never shown
    seconds: float = 0.0
    cached: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The cell as the table's JSON has it (the withheld value and timings left out)."""
        return {"value": self.value, "evidence": self.evidence, "supported": self.supported,
                "not_stated": self.not_stated, "reason": self.reason}

    def record(self) -> dict[str, Any]:
        """Everything, for the cache."""
        return {**self.as_dict(), "withheld": self.withheld, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Cell:
        return cls(record["value"], record["evidence"], record["supported"], record["not_stated"],
                   record.get("reason"), record.get("withheld"), record.get("seconds", 0.0), cached=True)

    @property
    def mark(self) -> str:
        """How a person sees it: the value, ``not stated``, or ``⚠ unsupported``."""
        return self.value if self.value is not None else ("not stated" if self.not_stated else "\u26a0 unsupported")


@dataclass
class Row:
    number: int
    paper: Paper
    cells: dict[str, Cell]

    def as_dict(self) -> dict[str, Any]:
        return {"paper_id": self.paper.id, "title": self.paper.title,
                "cells": {key: cell.as_dict() for key, cell in self.cells.items()}}


def not_stated(reason: str | None = None) -> Cell:
    return Cell(None, None, True, True, reason)


def parse_value(reply: str) -> str | None:
    """The value of the model's JSON reply; ``None`` for null, a "not stated" string or nothing.
    A reply cut short inside its string keeps what was written."""
    value: Any = None
    try:
        data = json.loads(reply)
        value = data.get("value") if isinstance(data, dict) else None
    except ValueError:
        m = _CUT_VALUE.search(reply)
        value = m.group(1) if m else None
    if not isinstance(value, str):
        return None if value is None else str(value)
    value = " ".join(value.split()).strip(" \"'")
    return None if not value or _SILENT.match(value) or says_no_answer(value) else value


# ------------------------------------------------------------------ asking


def abstract_prompt(paper: Paper, delimiter: str, fits: Any = None) -> str:
    """The fenced abstract that every column of the paper shares (its KV cache), cut at a sentence
    end when ``fits(text)`` says it is too long."""
    sentences = sentences_of(paper.abstract)
    text = " ".join(sentences)
    while fits is not None and len(sentences) > 1 and not fits(text):
        sentences.pop()
        text = " ".join(sentences)
    return prompts.TABLE_ABSTRACT_TEMPLATE.format(title=paper.title, abstract=text, delimiter=delimiter)


def cell_messages(abstract_block: str, column: Column) -> list[Message]:
    """System prompt and fenced abstract first (shared by the paper's columns), the question last."""
    instruction = prompts.CELL_INSTRUCTION.format(question=column.question)
    return [Message("system", prompts.TABLE_SYSTEM_PROMPT), Message("user", f"{abstract_block}\n\n{instruction}")]


def link_cell(paper: Paper) -> Cell:
    """The ``code`` column: the links the abstract's own sentences give (never a model's)."""
    for sentence in sentences_of(paper.abstract):
        if urls := extract_urls(sentence):
            return Cell(", ".join(urls), sentence, True, False)
    return not_stated("the abstract gives no link")


def ask(llm: Backend, abstract_block: str, column: Column) -> str | None:
    """The model's value for one column (None: it says the abstract does not state it)."""
    return parse_value(llm.structured(cell_messages(abstract_block, column), VALUE_SCHEMA, VALUE_TOKENS))


def extractive_value(paper: Paper, column: Column, support: SupportChecker) -> str | None:
    """Without a model: the abstract sentence that best matches the question, if it matches well enough."""
    sentences = sentences_of(paper.abstract)
    if not sentences:
        return None
    scores = support.support_scores([column.question], sentences)[0]
    best = int(scores.argmax())
    return sentences[best] if scores[best] >= EXTRACTIVE_MATCH else None


# ------------------------------------------------------------------ checking


def _states(sentence: str, fact: str) -> bool:
    """The sentence states a number or a name (``7,000`` states ``7000``)."""
    return holds(sentence.lower(), fact) or fact in numbers_in(sentence)


def check_value(value: str, paper: Paper, column: Column, support: SupportChecker) -> Cell:
    """The cell for a value the model gave: shown with its evidence sentence when the abstract
    supports it, else empty with the reason (the value kept as ``withheld``)."""
    def rejected(reason: str) -> Cell:
        return Cell(None, None, False, False, reason, withheld=value)

    facts = sorted(specifics(value, column.question))
    text = evidence_text(paper.title, paper.abstract)
    missing = [f for f in facts if not _states(text, f)]
    if missing:
        return rejected(f"the abstract does not state {', '.join(missing)}")
    claims = answer_sentences(value) or [value]
    checked = [support.check(f"{claim.rstrip('.')} [1].", {1: paper}, given=column.question) for claim in claims]
    sentences = [s for result in checked for s, _, _ in result]
    evidence = [e.sentence for result in checked for _, _, found in result for e in found]
    if sentences and not any(s.claim for s in sentences):
        return rejected("the value only restates the question")
    if not all(s.supported for s in sentences if s.claim):
        score = min((s.score for s in sentences if s.claim), default=0.0)
        return rejected(f"no sentence of the abstract supports it (best evidence scores {score:.2f}, "
                        f"under {support.settings.support_threshold:.2f})")
    best = evidence[0] if evidence else None
    # one sentence must state every number and name (a value stitched from several is not one fact),
    # the paper's own names aside: every sentence is about what its title names
    needed = [f for f in facts if not _states(paper.title, f)]
    if needed and (best is None or not all(_states(best, f) for f in needed)):
        holding = [s for s in sentences_of(paper.abstract) if all(_states(s, f) for f in needed)]
        if not holding:
            return rejected(f"no one sentence of the abstract states {', '.join(needed)}")
        best = holding[0]
    return Cell(value, best, True, False)


def names_in(value: str) -> set[str]:
    """The names (not numbers) a value gives: what an overview groups papers by.

    >>> sorted(names_in("ImageNet and COCO with 7B"))
    ['7b', 'coco', 'imagenet']
    """
    return {a for a in anchors(value) if not a.replace(".", "").isdigit()}


__all__ = ["CHECK_RULES", "VALUE_SCHEMA", "Cell", "Row", "abstract_prompt", "ask", "cell_messages", "check_value",
           "extractive_value", "link_cell", "names_in", "not_stated", "parse_value"]
