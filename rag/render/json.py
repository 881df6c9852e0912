"""An answer as the JSON object of the API and MCP, read from its `rag.render.view.AnswerView`.

`answer_summary` is what every interface reports besides the text: the cited papers (the items of
``rag ask --json`` plus ``url`` and ``supported``), the papers also retrieved, the answer's state
and provenance, and its flagged sentences (``unsupported_sentences``, as the text marks them).

Left out: the whole record ``rag ask --json`` prints (`rag.answer.answer_result.Answer.as_dict`, which
evaluation stores and replays), the message text (`rag.render.markdown.answer_message`).
"""

from __future__ import annotations

from typing import Any

from rag.answer.answer_result import Answer, Citation
from rag.render.view import AnswerView, citation_supported


def citation_item(citation: Citation, threshold: float) -> dict[str, Any]:
    """One cited paper as ``rag ask --json`` has it, plus ``url`` (its first link) and ``supported``
    (`rag.render.view.citation_supported` at the support ``threshold``)."""
    item = citation.as_dict()
    item["url"] = citation.paper.links[0] if citation.paper.links else None
    item["supported"] = citation_supported(citation, threshold)
    return item


def answer_summary(answer: Answer, threshold: float) -> dict[str, Any]:
    """The API's and MCP's answer object; ``threshold``: ``settings.answer.support_threshold``."""
    view = AnswerView.of(answer)
    return {
        "answer": answer.answer, "citations": [citation_item(c, threshold) for c in answer.citations],
        "also_retrieved": [{"number": c.number, "paper_id": c.paper.id, "title": c.paper.title,
                            "url": c.paper.links[0] if c.paper.links else None} for c in answer.also_retrieved],
        "abstained": answer.abstained, "abstain_reason": answer.abstain_reason, "incomplete": answer.incomplete,
        "error": answer.error, "backend": answer.backend, "model": answer.model, "notes": answer.notes,
        "query": answer.query,
        "unsupported_sentences": [s.text for s in view.flagged],
    }


__all__ = ["answer_summary", "citation_item"]
