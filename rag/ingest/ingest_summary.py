"""What one ingest did (`IngestSummary`) and how it is reported: the summary lines `rag ingest` and
the web upload print, one line per rejected, merged or flagged record (a few of each kind, then a
count), and the JSON of ``rag ingest --json``.

Left out: the ingest itself (`rag.ingest.ingestor`), the terminal and web display of these lines (`rag.cli`,
``ui``), what a record error says (`rag.errors`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from rag.errors import RecordError

SHOWN = 10  # repeated report lines of one kind shown before "... and N more"
INSTRUCTION_NOTE = "kept, but marked: this sentence is an instruction to an assistant, not a finding"


@dataclass
class IngestSummary:
    """What one ingest did. ``updated`` = ``changed`` (text, re-embedded) + ``metadata_only``
    (authors, year, source file...: no embedding)."""

    new: int = 0
    updated: int = 0
    changed: int = 0
    metadata_only: int = 0
    unchanged: int = 0
    merged: int = 0
    rejected: int = 0
    chunks_embedded: int = 0
    chunks_deleted: int = 0
    papers_total: int = 0
    chunks_total: int = 0
    seconds: float = 0.0
    errors: list[RecordError] = field(default_factory=list)
    merges: list[tuple[str, str, str]] = field(default_factory=list)
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (paper id, sentence): `rag.index.injection`

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k not in ("errors", "merges", "instructions")} | {
            "errors": [str(e) for e in self.errors],
            "merges": [list(m) for m in self.merges],
            "instructions": [list(i) for i in self.instructions],
        }


def summary_lines(summary: IngestSummary, where: str) -> list[str]:
    """The three lines `rag ingest` and the web upload print; ``where``: the data home, as shown to this reader.

    >>> summary_lines(IngestSummary(new=1, changed=2, metadata_only=13, unchanged=4), "/data")[0]
    'papers: 1 new, 2 changed, 13 metadata only, 4 unchanged, 0 merged, 0 rejected'
    """
    rate = summary.chunks_embedded / summary.seconds if summary.seconds else 0
    return [f"papers: {summary.new} new, {summary.changed} changed, {summary.metadata_only} metadata only, "
            f"{summary.unchanged} unchanged, {summary.merged} merged, {summary.rejected} rejected",
            f"chunks: {summary.chunks_embedded} embedded ({rate:.1f}/s), {summary.chunks_deleted} deleted",
            f"index: {summary.papers_total} papers, {summary.chunks_total} chunks in {where} ({summary.seconds:.1f}s)"]


def record_lines(summary: IngestSummary, shown: int = SHOWN) -> list[tuple[str, str]]:
    """("rejected" | "merged" | "flagged" | "more", text) for the records worth a line, each kind summarised
    after ``shown`` lines: a file with one paper a million times prints ten "merged" lines and a count.

    >>> s = IngestSummary(merged=3, merges=[("p", "f:1", "f:2"), ("p", "f:2", "f:3"), ("p", "f:3", "f:4")])
    >>> record_lines(s, shown=1)
    [('merged', 'p: f:1 -> f:2 (later record kept)'), ('more', '... and 2 more merged records (later record kept)')]
    """
    out: list[tuple[str, str]] = [("rejected", err.user_message()) for err in summary.errors[:shown]]
    if len(summary.errors) > shown:
        out.append(("more", f"... and {len(summary.errors) - shown:,} more rejected records"))
    out += [("merged", f"{pid}: {a} -> {b} (later record kept)") for pid, a, b in summary.merges[:shown]]
    if len(summary.merges) > shown:
        out.append(("more", f"... and {len(summary.merges) - shown:,} more merged records (later record kept)"))
    out += [("flagged", f"{pid}: {INSTRUCTION_NOTE}: {sentence!r}") for pid, sentence in summary.instructions[:shown]]
    if len(summary.instructions) > shown:
        out.append(("more", f"... and {len(summary.instructions) - shown:,} more flagged sentences "
                            f"({INSTRUCTION_NOTE})"))
    return out


def summary_json(summary: IngestSummary) -> str:
    return json.dumps(summary.as_dict(), indent=2)
