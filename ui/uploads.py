"""Uploaded corpus files -> the index, with the same summary and per-record errors as `rag ingest`.

File names from the browser are not trusted: each file is copied into a fresh private
temp folder under a name of our making (``upload-<n>-<safe stem><suffix>``), keeping the
suffix only if it is a corpus format (`rag.index.loaders.FORMATS`); anything else is refused
before it is read. Files larger than ``settings.ui.max_upload_mb`` are refused. The
copies are parsed with the `rag.index.loaders` loaders, reported under the user's own (cleaned)
file name, ingested by `rag.ingest.ingestor.Ingestor`, and deleted; nothing uploaded is ever served
back (the app never adds upload folders to ``allowed_paths``).

Example: ``../../evil.jsonl`` is staged as ``/tmp/paper-rag-upload-x1y2/upload-1-evil.jsonl``
and reported as ``evil.jsonl``.

Left out: the progress bar itself (the caller passes callbacks) and the web layer.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from rag.errors import RagError, RecordError
from rag.index.embeddings import Embedder
from rag.index.loaders import FORMATS, LoadReport, load_file
from rag.ingest.ingest_summary import IngestSummary, summary_lines
from rag.ingest.ingestor import Ingestor
from rag.settings import Settings

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class StagedFile:
    display: str          # cleaned base name shown to the user
    path: Path | None     # our private copy; None when refused
    problem: str | None = None


@dataclass
class UploadResult:
    summary: IngestSummary | None
    refused: list[str] = field(default_factory=list)   # whole files refused (size, format, unreadable)

    @property
    def ok(self) -> bool:
        return self.summary is not None and not self.refused and not self.summary.rejected


def display_name(name: str) -> str:
    """The base name of an untrusted path, reduced to safe characters.

    >>> display_name("../../evil.jsonl"), display_name("C:\\\\x\\\\a b<c>.csv"), display_name("..")
    ('evil.jsonl', 'a_b_c_.csv', 'file')
    """
    base = PureWindowsPath(PurePosixPath(str(name)).name).name
    base = _UNSAFE.sub("_", base).strip("._") or "file"
    return base[:120]


def _source_of(item: Any) -> tuple[Path, str]:
    """(server-side path, the name the user gave) for a str path or a Gradio FileData-like object."""
    if isinstance(item, str | Path):
        return Path(item), Path(item).name
    path = getattr(item, "path", None) or getattr(item, "name", None)
    orig = getattr(item, "orig_name", None) or Path(str(path)).name
    return Path(str(path)), str(orig)


def stage(files: Iterable[Any], folder: Path, max_bytes: int) -> list[StagedFile]:
    """Copy each acceptable upload into ``folder`` under a safe name."""
    staged = []
    for n, item in enumerate(files, 1):
        source, given = _source_of(item)
        shown = display_name(given)
        suffix = Path(shown).suffix.lower()
        if suffix not in FORMATS:
            staged.append(StagedFile(shown, None, f"{shown}: unsupported file type {suffix or '(none)'!r}; "
                                                  f"use one of {', '.join(sorted(FORMATS))}"))
            continue
        try:
            size = source.stat().st_size
        except OSError:
            staged.append(StagedFile(shown, None, f"{shown}: the upload could not be read"))
            continue
        if size > max_bytes:
            staged.append(StagedFile(shown, None, f"{shown}: {size / 2**20:.1f} MB is over the upload limit of "
                                                  f"{max_bytes / 2**20:.0f} MB (RAG_UI__MAX_UPLOAD_MB)"))
            continue
        target = folder / f"upload-{n}-{Path(shown).stem[:80]}{suffix}"
        shutil.copyfile(source, target)
        staged.append(StagedFile(shown, target))
    return staged


def load_staged(staged: list[StagedFile]) -> tuple[LoadReport, list[str]]:
    """Parse staged copies; errors and paper sources name the user's file, not our temp path."""
    report, refused = LoadReport(), [s.problem for s in staged if s.problem]
    for s in staged:
        if s.path is None:
            continue
        prefix = str(s.path)
        try:
            for item in load_file(s.path):
                if isinstance(item, RecordError):
                    message = str(item).removeprefix(f"{prefix}:{item.line}: ")
                    item = RecordError(s.display, item.line, message, item.fix or None)
                else:
                    item.source = f"upload:{s.display}"
                report.add(item)
        except RagError as err:  # the whole file cannot be read: name the user's file, never our copy
            refused.append(err.user_message().replace(prefix, s.display).replace(s.path.name, s.display)
                           .replace(s.path.stem, Path(s.display).stem))
    return report, refused


def ingest_uploads(files: Iterable[Any], settings: Settings, embedder: Embedder | None = None,
                   on_start: Callable[[int], None] | None = None,
                   on_embedded: Callable[[int], None] | None = None) -> UploadResult:
    """Stage, parse and ingest uploaded files; the temp copies are always removed."""
    folder = Path(tempfile.mkdtemp(prefix="paper-rag-upload-"))
    try:
        staged = stage(files, folder, settings.ui.max_upload_mb * 2**20)
        report, refused = load_staged(staged)
        if not report.papers and not report.errors:
            return UploadResult(None, refused or ["no file to ingest"])
        summary = Ingestor(settings, embedder=embedder).run(report=report, on_start=on_start,
                                                             on_embedded=on_embedded)
        return UploadResult(summary, refused)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def summary_text(summary: IngestSummary) -> str:
    """The three lines `rag ingest` prints (the data home's path left out: web users need not see it)."""
    return "\n".join(summary_lines(summary, "the data home"))
