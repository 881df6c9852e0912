"""Where the ``rag`` commands write, and what they write there besides their own results.

- `out` (stdout: results) and `console` (stderr: progress, notes, errors); `emit_json` (``--json``);
- the exit statuses the commands end with (a `rag.errors.RagError` ends with its own,
  `rag.errors.outcome`);
- search results for people (`print_hits`) and the filters' notes (`print_notices`);
- one answer (`show_answer`): `rag.terminal`'s stage spinner and tokens, then the checked answer
  and its lines (`rag.render.terminal`), or its JSON record.

Left out: the commands (`rag.cli`, `rag.papers_commands`, `rag.chat_repl`), their options
(`rag.cli_options`), a failed command's line (`rag.cli_errors`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

EXIT_REJECTED = 1  # ingest: some records were rejected, the rest was ingested
EXIT_FAILED = 1  # ask / chat: an answer (a turn) failed or was cut short
EXIT_ERROR = 2  # a usage error (click's status); a RagError exits with `rag.errors.outcome(err).exit_code`


def emit_json(data: Any, lines: bool = False) -> None:
    """``data`` as JSON on stdout: indented, or one line (JSON Lines) when ``lines``."""
    text = json.dumps(data, indent=None if lines else 2, ensure_ascii=False, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def print_notices(notices: list[str]) -> None:
    """What the filters left out (`rag.search.filters.allowed_ids`), one ``note:`` line each on stderr."""
    for notice in notices:
        console.print(f"note: {notice}", markup=False)


def print_hits(hits: list[Any]) -> None:
    """Ranked papers for people: title, id and scores, then the best snippet."""
    from rich.text import Text

    for rank, hit in enumerate(hits, 1):
        dense = f"{hit.dense:.3f}" if hit.dense is not None else "-"
        lexical = f"{hit.lexical:.2f}" if hit.lexical is not None else "-"
        bonus = f", name match +{hit.name_bonus:.3f}" if getattr(hit, "name_bonus", 0) else ""  # why a score tops 1
        out.print(Text.assemble((f"{rank}. {hit.paper.title}", "bold"), (
            f"  {hit.paper.id}  score {hit.score:.3f} (dense {dense}, bm25 {lexical}{bonus})", "dim")))
        if hit.chunks:
            out.print(Text(f"   {hit.chunks[0].text[:300]}"))


def show_answer(events: Any, as_json: bool, lines: bool = False, notices: Any = None,
                backend_notes: Any = tuple) -> Any:
    """One answer on the terminal (`rag.terminal`: stage spinner, tokens, the checked answer once),
    or as JSON; ``notices`` (a `rag.notices.Notices`) says each note once per chat, ``backend_notes``
    (called after the answer) gives the backend's notes, shown only when a model ran."""
    from rag.notices import Notices
    from rag.terminal import print_answer, render_events

    answer = render_events(events, out, console, write=not as_json)
    if as_json:
        emit_json(answer.as_dict(), lines=lines)
    else:
        print_answer(answer, out, console, (notices or Notices()).fresh(answer, backend_notes()))
    return answer


__all__ = ["EXIT_ERROR", "EXIT_FAILED", "EXIT_REJECTED", "console", "emit_json", "out", "print_hits", "print_notices",
           "show_answer"]
