"""What ``rag ask`` and ``rag chat`` print while an answer is made, and the answer itself, once.

- While nothing is being written: a rich spinner on stderr with the stage the answer is at
  (``searching the papers · 3 s``, ``reading 5 papers``, ``checking the answer``...) and the seconds
  since it began; only when stderr is a terminal, so logs and pipes stay clean.
- Tokens are written to stdout as they come when stdout is a terminal; the checked answer then
  *replaces* them in place (erased, rewritten with its flagged sentences marked). A pipe gets the
  checked answer alone. Either way each answer is printed once.
- Then the notes, sources with their evidence, and timings (`print_answer`).

What the answer looks like (its marks, its lines) is `rag.render.terminal`; this module writes it.

Event kinds other than ``stage``, ``token`` and ``done`` are ignored, so a newer answer stream
works with this printer. Left out: the commands themselves (`rag.cli`), JSON output (the caller).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from rag.answer.answerer import STAGE_SEARCH
from rag.render.terminal import answer_lines, answer_text

FIRST_STAGE = STAGE_SEARCH  # shown from the start, before the stream says anything


class _Elapsed:
    """A stage line that re-renders with the seconds since the answer began (the spinner refreshes it)."""

    def __init__(self, started: float) -> None:
        self.started, self.stage = started, FIRST_STAGE

    def __rich__(self) -> Text:
        return Text(f"{self.stage} · {time.monotonic() - self.started:.0f} s", style="dim")


class StageSpinner:
    """A transient spinner on ``console`` (stderr) showing the current stage; does nothing unless
    ``console`` is a terminal."""

    def __init__(self, console: Console) -> None:
        self.enabled = console.is_terminal
        self.line = _Elapsed(time.monotonic())
        self._status = console.status(self.line, spinner="dots") if self.enabled else None
        self.running = False

    def show(self, stage: str | None = None) -> None:
        if stage:
            self.line.stage = stage
        if self._status is not None and not self.running:
            self._status.start()
            self.running = True

    def hide(self) -> None:
        if self._status is not None and self.running:
            self._status.stop()
            self.running = False


def rows(text: str, width: int) -> int:
    """Terminal rows ``text`` takes when written from column 0 on a ``width``-column terminal.

    >>> rows("abc\\n" + "x" * 85, 80)
    3
    """
    return sum(max(1, -(-cell_len(line) // width)) for line in text.split("\n"))


def render_events(events: Iterable[Any], out: Console, console: Console, write: bool = True) -> Any:
    """Show an answer stream on a terminal: the stage spinner (stderr), tokens (stdout, when a
    terminal), then the checked answer once, replacing what streamed; returns the answer.
    ``write=False``: the spinner only (the caller prints the answer as JSON)."""
    show_tokens = write and out.is_terminal
    spinner = StageSpinner(console)
    answer, streamed, at_line_start = None, "", True
    spinner.show()
    try:
        for event in events:
            if event.kind == "stage":
                if streamed and not at_line_start and show_tokens:
                    out.file.write("\n")  # the spinner takes a line of its own below the text
                    at_line_start = True
                spinner.show(event.text)
            elif event.kind == "token":
                spinner.hide()
                streamed += event.text
                if show_tokens:
                    out.file.write(event.text)
                    out.file.flush()
                    at_line_start = False
            elif event.kind == "done":
                answer = event.answer
    finally:
        spinner.hide()
    if answer is None or not write:
        return answer
    checked = answer_text(answer)
    if show_tokens and streamed.strip():
        if checked.plain.strip() == streamed.strip():
            out.file.write("\n" if not at_line_start else "")
            out.file.flush()
            return answer
        up = rows(streamed, out.width) - (0 if at_line_start else 1)
        out.file.write("\r" + (f"\x1b[{up}A" if up > 0 else "") + "\x1b[J")  # erase what streamed
        out.file.flush()
    out.print(checked)
    return answer


def print_answer(answer: Any, out: Console, console: Console, notes: list[str] | None = None) -> None:
    """After the answer text, its `rag.render.terminal.answer_lines` (``notes``: default all of the
    answer's): the answer's state on ``console`` (stderr), its sources and timings on ``out``."""
    for line in answer_lines(answer, notes):
        (console if line.stderr else out).print(line.text)


__all__ = ["FIRST_STAGE", "StageSpinner", "print_answer", "render_events", "rows"]
