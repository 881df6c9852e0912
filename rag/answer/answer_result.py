"""What the answer step produces: `Answer` (the answer, its checked sentences and its sources),
`Citation` (one numbered paper and its evidence) and `Event` (what `rag.answer.answerer.Answerer.stream`
yields).

Left out: how an answer is made (`rag.answer.answerer`), how its sentences are checked (`rag.answer.support`), how
it is shown (`rag.render`: which sentences are flagged, decided once in `rag.render.view`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rag.answer.support import AnswerSentence, Evidence
from rag.index.corpus import Paper
from rag.search.retrieval import Confidence


@dataclass
class Citation:
    number: int
    paper: Paper
    cited: bool
    score: float                                    # retrieval score
    evidence: list[Evidence] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "paper_id": self.paper.id, "title": self.paper.title,
                "year": self.paper.year, "authors": self.paper.authors, "links": self.paper.links,
                "abstract": self.paper.abstract, "cited": self.cited, "score": round(self.score, 6),
                "evidence": [e.as_dict() for e in self.evidence]}


@dataclass
class Answer:
    question: str
    query: str
    answer: str = ""
    abstained: bool = False
    abstain_reason: str | None = None
    incomplete: bool = False
    error: str | None = None
    backend: str = ""
    model: str = ""
    notes: list[str] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)      # cited papers, in order of first citation
    also_retrieved: list[Citation] = field(default_factory=list)  # retrieved, not cited
    sentences: list[AnswerSentence] = field(default_factory=list)
    invalid_citations: int = 0
    removed: list[str] = field(default_factory=list)  # text that leaked from the prompt, taken out
    generated: str = ""  # what the model wrote, before any check (`rag eval rescore` replays it)
    withheld: list[str] = field(default_factory=list)  # claims left out: no abstract states their numbers or names
    language: str = "en"  # the question's language, which the answer is written in
    verdict: str | None = None  # the model's answer to "do the abstracts state the answer?"
    confidence: Confidence | None = None
    retrieved: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "question": self.question, "query": self.query, "answer": self.answer,
            "abstained": self.abstained, "abstain_reason": self.abstain_reason,
            "incomplete": self.incomplete, "error": self.error, "backend": self.backend, "model": self.model,
            "notes": self.notes, "citations": [c.as_dict() for c in self.citations],
            "also_retrieved": [c.as_dict() for c in self.also_retrieved],
            "sentences": [s.as_dict() for s in self.sentences], "invalid_citations": self.invalid_citations,
            "removed": self.removed, "generated": self.generated, "withheld": self.withheld,
            "language": self.language, "verdict": self.verdict,
            "confidence": self.confidence.as_dict() if self.confidence else None,
            "retrieved": self.retrieved, "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


@dataclass
class Event:
    """What `Answerer.stream` yields: stage lines and text deltas as they come, then the finished answer.

    ``stage`` events say what the pipeline is doing ("searching the papers", "reading 3 papers",
    "writing the answer", "checking the answer"), for a progress line; consumers ignore kinds they
    do not know."""

    kind: str                      # "stage" | "token" | "done"
    text: str = ""
    answer: Answer | None = None
