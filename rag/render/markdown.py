"""An answer as Markdown, read from its `rag.render.view.AnswerView`: what the API and MCP send and
what the conversation export writes.

- `marked_answer`: the answer with each flagged sentence followed by its mark (``plain``
  ``[unsupported]``, ``markdown`` `` ⚠ *unsupported*``);
- `sources_markdown`: the cited papers as a list (``- [n] [Title](url) (year) · `paper-id```), or
  the nearest ones under their own heading when an abstention cites none; `split_sources` reads
  it back from an earlier assistant message (``ui.service.PaperService.replay``);
- `answer_message`: the API's and MCP's message text, the marked answer then the source list;
- `conversation_markdown`: a conversation's questions, marked answers (or tables) and references.

Every corpus or user string goes through `rag.markup` (a title or DOI never becomes an image; an
answer's raw HTML is disarmed). Left out: HTML (``ui.render``), BibTeX (`rag.index.bibtex`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.answer.answer_result import Answer, Citation
from rag.index.corpus import Paper
from rag.markup import md_code, md_prose, md_text, md_url
from rag.render.view import AnswerView

SOURCES_HEADING = "**Sources**"
NEAREST_HEADING = "**Nearest papers** (none cited)"
_SOURCE_LINE = re.compile(r"^- \[(\d+)\] .*`([^`\n]+)`\s*$", re.M)


def marked_answer(answer: Answer, style: str = "plain") -> str:
    """The answer with each flagged sentence followed by a mark: ``plain`` ``[unsupported]``,
    ``markdown`` `` ⚠ *unsupported*`` (`rag.render.view.MARKS`). Raw: not yet made safe Markdown."""
    return AnswerView.of(answer).marked(style)


def _source_line(c: Citation, numbered: bool) -> str:
    url = md_url(c.paper.links[0]) if c.paper.links else None
    title = f"[{md_text(c.paper.title)}]({url})" if url else md_text(c.paper.title)
    year = f" ({c.paper.year})" if c.paper.year else ""
    return f"- {f'[{c.number}] ' if numbered else ''}{title}{year} · {md_code(c.paper.id)}"


def sources_markdown(answer: Answer) -> str:
    """The cited papers as a Markdown list (read back by `split_sources`), or the nearest ones on an
    abstention that cites none; empty when there are neither."""
    view = AnswerView.of(answer)
    if answer.citations:
        return "\n".join([SOURCES_HEADING, "", *(_source_line(c, True) for c in answer.citations)])
    if view.nearest:
        return "\n".join([NEAREST_HEADING, "", *(_source_line(c, False) for c in view.nearest)])
    return ""


def split_sources(text: str) -> tuple[str, list[tuple[int, str]]]:
    """(answer text without an appended source list, its (number, paper id) pairs).

    >>> split_sources("A [1].\\n\\n**Sources**\\n\\n- [1] [T](https://x) (2024) · `arxiv:2401.1`")
    ('A [1].', [(1, 'arxiv:2401.1')])
    """
    for heading in (SOURCES_HEADING, NEAREST_HEADING):
        at = text.rfind("\n\n" + heading)
        if at >= 0:
            tail = text[at:]
            pairs = [(int(n), pid) for n, pid in _SOURCE_LINE.findall(tail)] if heading == SOURCES_HEADING else []
            return text[:at].rstrip(), pairs
    return text.rstrip(), []


def answer_message(answer: Answer, markdown: bool, sources: bool = True) -> str:
    """The checked answer with flagged sentences marked (``markdown``: `` ⚠ *unsupported*``, else
    ``[unsupported]``), then, with ``markdown`` and ``sources``, the source list. Chat clients
    render it as Markdown either way, so raw HTML and images in it are disarmed (`rag.markup.md_prose`)."""
    text = md_prose(marked_answer(answer, "markdown" if markdown else "plain"))
    listed = sources_markdown(answer) if markdown and sources else ""
    return f"{text}\n\n{listed}" if listed else text


def conversation_markdown(turns: Sequence[tuple[str, Answer | str]], papers: Sequence[tuple[int, Paper]]) -> str:
    """A conversation as Markdown: each (question, answer) turn, flagged sentences marked as in the
    web chat, or (question, safe Markdown) for a turn shown otherwise (a table:
    `rag.table.export.with_notes`), then ``papers`` (number, paper) as its references."""
    lines = ["# Conversation", ""]
    for question, answer in turns:
        if isinstance(answer, str):
            lines += [f"**Q:** {md_text(question)}", "", answer.rstrip(), ""]
            continue
        view = AnswerView.of(answer)
        lines += [f"**Q:** {md_text(question)}", "", md_prose(view.marked("markdown")), ""]
        if view.flagged:
            lines += [f"> {len(view.flagged)} of {view.sentence_count} sentences are not supported by the "
                      "abstracts they cite (marked).", ""]
    if papers:
        lines += ["## References", ""]
        for number, paper in papers:
            link = (md_url(paper.links[0]) or "") if paper.links else ""
            year = f" ({paper.year})" if paper.year else ""
            lines.append(f"[{number}] {md_text(paper.title)}{year}. {md_text(', '.join(paper.authors))} "
                         f"{link}".rstrip())
    return "\n".join(lines) + "\n"


__all__ = ["NEAREST_HEADING", "SOURCES_HEADING", "answer_message", "conversation_markdown", "marked_answer",
           "sources_markdown", "split_sources"]
