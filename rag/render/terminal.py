"""An answer as rich ``Text`` for ``rag ask`` and ``rag chat``, read from its `rag.render.view.AnswerView`.

- `answer_text`: the checked answer, flagged sentences underlined and followed by their mark
  (`rag.render.view.MARKS` ``plain``: `` [unsupported]``);
- `answer_lines`: what follows it, each line for stdout or stderr: notes, the incomplete answer's
  reason, "2 of 5 sentences not supported ...", the abstention's reason, the cited papers with
  their first two links and evidence, the papers also retrieved, the backend and timings.

Built from ``Text`` pieces, never markup, so brackets in answers and titles print as written.
Left out: writing them (`rag.terminal`: the spinner, the streamed tokens), JSON (``--json`` prints
`rag.answer.answer_result.Answer.as_dict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rich.text import Text

from rag.answer.answer_result import Answer
from rag.render.view import MARKS, AnswerView


class Line(NamedTuple):
    text: Text
    stderr: bool = False  # notes and the answer's state go to stderr, the rest to stdout


def answer_text(answer: Answer) -> Text:
    """The checked answer: flagged sentences underlined, each followed by its mark."""
    text = Text()
    for piece in AnswerView.of(answer).segments:
        if piece.flag is None:
            text.append(piece.text)
        else:
            text.append(piece.text, style="underline yellow")
            text.append(" " + MARKS["plain"].format(flag=piece.flag), style="bold yellow")
    return text


def answer_lines(answer: Answer, notes: Sequence[str] | None = None) -> list[Line]:
    """After the answer text: ``notes`` (default: all of the answer's), the flag count, sources (cited
    first, with evidence) and timings."""
    view = AnswerView.of(answer)
    lines = [Line(Text.assemble(("note: ", "cyan"), note), True) for note in (answer.notes if notes is None else notes)]
    if view.incomplete_reason is not None:
        lines.append(Line(Text.assemble(("incomplete answer: ", "red"), view.incomplete_reason), True))
    if view.flagged:
        lines.append(Line(Text(f"{len(view.flagged)} of {view.sentence_count} sentences not supported by the "
                               "abstracts they cite (marked)", style="dim")))
    if answer.abstained and answer.abstain_reason:
        lines.append(Line(Text(f"abstained: {answer.abstain_reason}", style="dim"), True))
    for c in answer.citations:
        lines.append(Line(Text.assemble((f"[{c.number}] ", "bold"), c.paper.title, "  ", (c.paper.id, "dim"))))
        lines += [Line(Text(f"    {link}")) for link in c.paper.links[:2]]
        lines += [Line(Text.assemble(("    evidence ", "green"), (f"({e.score:.2f}): ", "green"), e.sentence))
                  for e in c.evidence]
    if answer.also_retrieved:
        lines.append(Line(Text("also retrieved: " + "; ".join(f"[{c.number}] {c.paper.title}"
                                                              for c in answer.also_retrieved), style="dim")))
    t = answer.timings
    lines.append(Line(Text(f"{answer.backend} ({answer.model}) · retrieval {t.get('retrieval_s', 0):.2f}s · "
                           f"first token {t.get('ttft_s', 0):.2f}s · total {t.get('total_s', 0):.2f}s", style="dim")))
    return lines


__all__ = ["Line", "answer_lines", "answer_text"]
