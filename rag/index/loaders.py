"""Corpus files -> `Paper` records: one loader per format, files and folders, de-duplication.

Formats, chosen by extension (`FORMATS`):

- ``.txt``: the "trending papers" page copy (two header lines, then title / abstract
  line pairs; the first title glued to the word "Subscribe").
- ``.jsonl`` / ``.ndjson`` / ``.json``: JSON Lines or a JSON array, in our own schema
  (the `Paper` fields) or the arXiv metadata snapshot's (``id``, ``title``, ``abstract``,
  ``authors``, ``categories``, ``update_date``, ``doi``). A ``.json`` file whose first
  character is not ``[`` is read as JSON Lines, as the arXiv snapshot is.
- ``.csv`` / ``.tsv``: a header row with ``title`` and ``abstract`` columns (any case);
  other columns are kept in ``extra``.
- ``.bib``: BibTeX entries with an ``abstract`` field (Zotero and arXiv exports).

A malformed record becomes a `RecordError` naming file and line, and loading goes on.
A file that cannot be read at all raises `CorpusError`. The same paper twice (one `Paper.id`)
is merged by `LoadReport`, the later record winning. Left out: what a record becomes (fields,
identity, validation: `rag.index.corpus.paper_from_record`), chunking, embedding and anything that
writes the index.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import CorpusError, RecordError
from rag.index.corpus import (
    MAX_ABSTRACT_CHARS,
    Paper,
    clean_text,
    decode_markup,
    normalise_arxiv_id,
    paper_from_record,
)

FORMATS = {".txt": "trending", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
           ".csv": "csv", ".tsv": "csv", ".bib": "bibtex"}


@dataclass
class LoadReport:
    """What loading produced: unique papers (last record wins), rejects and merges."""

    papers: dict[str, Paper] = field(default_factory=dict)
    errors: list[RecordError] = field(default_factory=list)
    merged: list[tuple[str, str, str]] = field(default_factory=list)  # (id, earlier, later source)
    records: int = 0

    def add(self, item: Paper | RecordError) -> None:
        if isinstance(item, RecordError):
            self.errors.append(item)
            return
        self.records += 1
        earlier = self.papers.pop(item.id, None)  # pop: the later record also takes the later position
        if earlier is not None:
            self.merged.append((item.id, earlier.source or "?", item.source or "?"))
        self.papers[item.id] = item

def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise CorpusError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start})",
            f"convert it, e.g. `iconv -f latin1 -t utf-8 {path.name} > {path.stem}-utf8{path.suffix}`",
        ) from None


def load_trending(path: Path) -> Iterator[Paper | RecordError]:
    """The bundled page copy: header lines, then alternating title and abstract lines."""
    lines = [(n, ln.strip()) for n, ln in enumerate(_read_text(path).splitlines(), 1)]
    lines = [(n, ln) for n, ln in lines if ln and not ln.lower().startswith("get trending papers")]
    for i in range(0, len(lines) - 1, 2):
        (n, title), (_, abstract) = lines[i], lines[i + 1]
        if title.startswith("Subscribe") and len(title) > len("Subscribe"):
            title = title[len("Subscribe"):]
        yield paper_from_record({"title": title, "abstract": abstract}, str(path), n)
    if len(lines) % 2:
        n, text = lines[-1]
        yield RecordError(str(path), n, f"title {text[:60]!r} has no abstract line after it")


def load_jsonl(path: Path) -> Iterator[Paper | RecordError]:
    """JSON Lines, decoded line by line so one bad line costs one record."""
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8-sig" if n == 1 else "utf-8"))
            except UnicodeDecodeError:
                yield RecordError(str(path), n, "line is not UTF-8", "re-export the file as UTF-8")
                continue
            except json.JSONDecodeError as err:
                yield RecordError(str(path), n, f"bad JSON ({err.msg}, column {err.colno})")
                continue
            except RecursionError:
                yield RecordError(str(path), n, "bad JSON (nested too deeply to read)", "flatten the record")
                continue
            except ValueError as err:  # e.g. an integer past Python's 4,300-digit limit
                yield RecordError(str(path), n, f"bad JSON ({str(err)[:120]})")
                continue
            yield paper_from_record(record, str(path), n)


def load_json(path: Path) -> Iterator[Paper | RecordError]:
    """A JSON array (each element's line is reported) or JSON Lines with a .json name."""
    text = _read_text(path)
    if not text.lstrip().startswith("["):
        yield from load_jsonl(path)
        return
    for line, record in array_elements(text, str(path)):
        yield paper_from_record(record, str(path), line)


_WS = re.compile(r"[ \t\r\n]*")


def array_elements(text: str, source: str) -> Iterator[tuple[int, Any]]:
    r"""(line, value) for each element of the JSON array that ``text`` holds, in one linear pass.

    Elements are decoded one at a time (``raw_decode``) and line numbers advance by the newlines
    between them, so a 100k-element array costs what the same JSON Lines file does. Broken syntax
    (or an element nested too deeply to decode) raises `CorpusError` at its line: past it, element
    boundaries are unknown.

    >>> [line for line, _ in array_elements('[{"a": 1},\n {"b": 2}]', "x.json")]
    [1, 2]
    """
    decoder, pos, line, counted = json.JSONDecoder(), text.index("[") + 1, 1, 0

    def fail(at: int, message: str, fix: str = "fix the JSON syntax at that line") -> CorpusError:
        at_line = line + text.count("\n", counted, at)
        return CorpusError(f"{source}:{at_line}: bad JSON ({message})", fix)

    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
    expect_value = not text.startswith("]", pos)
    while expect_value:
        line, counted = line + text.count("\n", counted, pos), pos
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise fail(err.pos, err.msg) from None
        except RecursionError:
            raise fail(pos, "an element is nested too deeply to read", "flatten that element") from None
        yield line, value
        pos = _WS.match(text, end).end()  # type: ignore[union-attr]
        if not text.startswith((",", "]"), pos):
            raise fail(pos, "expected ',' or ']' after an element")
        expect_value = text[pos] == ","
        pos = _WS.match(text, pos + 1).end() if expect_value else pos  # type: ignore[union-attr]
    if text[pos + 1:].strip():
        raise fail(pos + 1, "text after the closing ']'")


def load_csv(path: Path) -> Iterator[Paper | RecordError]:
    """A header row naming at least ``title`` and ``abstract`` (any case)."""
    text = _read_text(path)
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    header = {h.strip().lower() for h in reader.fieldnames or [] if h}
    if clash := _same_name_columns(reader.fieldnames or []):
        raise CorpusError(f"{path}:1: CSV columns {' and '.join(map(repr, clash))} differ only in case or spaces",
                          "rename or remove one of them, so each column has its own name")
    if not {"title", "abstract"} <= header:
        raise CorpusError(
            f"{path}:1: CSV header {sorted(header)} lacks a title or abstract column",
            "name the columns `title` and `abstract` in the first row",
        )
    start = 2
    csv.field_size_limit(max(csv.field_size_limit(), 4 * MAX_ABSTRACT_CHARS))  # a long field is rejected, not fatal
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as err:  # a field past even that limit, or a NUL byte: the rest is unreadable
            yield RecordError(str(path), start, f"unreadable CSV row ({err}); the rest of the file is skipped")
            return
        record = {k: v for k, v in row.items() if k is not None}
        if None in row:
            record["extra_columns"] = row[None]
        yield paper_from_record(record, str(path), start)
        start = reader.line_num + 1


def _same_name_columns(names: Iterable[str | None]) -> list[str]:
    """The first group of header names that are one column to us (``title`` and ``Title``), or []."""
    groups: dict[str, list[str]] = {}
    for name in names:
        if name:
            groups.setdefault(name.strip().lower(), []).append(name)
    return next((group for group in groups.values() if len(group) > 1), [])


VERBATIM_FIELDS = ("doi", "url", "eprint")  # identifiers: only an escape is decoded, never a dash or a tilde
VENUE_FIELDS = ("journal", "journaltitle", "booktitle", "eventtitle", "publisher", "organization", "institution",
                "school", "howpublished", "series", "edition", "volume", "number", "issue", "pages", "month",
                "address", "location", "editor", "isbn", "issn", "note")  # kept in ``extra["bibtex"]`` for export


def load_bibtex(path: Path) -> Iterator[Paper | RecordError]:
    """BibTeX entries; ``eprint`` + ``archiveprefix = arXiv`` gives the arXiv id.

    Text fields are decoded once from LaTeX (every accent form: ``Fran{\\c{c}}ois``, ``{\\L}ukasz``,
    ``\\"{o}``, ``{\\'e}``), authors split at ``and`` outside braces and turned round from
    ``Last, First``. The entry type, key and venue fields are kept in ``extra`` (`rag.index.bibtex` writes
    them back)."""
    import bibtexparser

    quiet = logging.getLogger("bibtexparser")
    level, quiet.level = quiet.level, logging.CRITICAL  # its own dump of each failure, with other line numbers
    try:
        library = bibtexparser.parse_string(_read_text(path))
    finally:
        quiet.setLevel(level)
    for block in library.failed_blocks:
        yield RecordError(str(path), (block.start_line or 0) + 1, bibtex_failure(block),
                          "fix that entry (a missing `}` or `,` is the usual cause), or remove it")
    for entry in library.entries:
        raw = {k.lower(): str(v.value) for k, v in entry.fields_dict.items()}
        fields = {k: _bib_verbatim(v) if k in VERBATIM_FIELDS else clean_text(decode_markup(v, latex=True))
                  for k, v in raw.items() if k != "author"}
        line = (entry.start_line or 0) + 1
        if not fields.get("title"):
            yield RecordError(str(path), line, f"entry {entry.key!r} has no title", "add a title field")
            continue
        if not fields.get("abstract"):
            yield RecordError(str(path), line, f"entry {entry.key!r} has no abstract", "add an abstract field")
            continue
        prefix = (fields.get("archiveprefix", "") + fields.get("eprinttype", "")).lower()
        arxiv = fields.get("eprint") if "arxiv" in prefix else None
        venue = {k: fields[k] for k in VENUE_FIELDS if fields.get(k)}
        yield paper_from_record({
            "title": fields["title"], "abstract": fields["abstract"], "authors": bibtex_names(raw.get("author", "")),
            "year": fields.get("year") or fields.get("date"), "doi": fields.get("doi"),
            "arxiv_id": arxiv or (fields.get("eprint") if normalise_arxiv_id(fields.get("eprint", "")) else None),
            "categories": fields.get("keywords") or fields.get("primaryclass"), "url": fields.get("url"),
            "extra": {"bibtex_key": entry.key, "entry_type": entry.entry_type, **({"bibtex": venue} if venue else {})},
        }, str(path), line, decoded=True)


def _split_top(text: str, separator: re.Pattern[str]) -> list[str]:
    """``text`` split where ``separator`` matches outside braces."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        depth += (char == "{") - (char == "}")
        if depth == 0 and (m := separator.match(text, i)):
            parts.append(text[start:i])
            start = i = m.end()
            continue
        i += 1
    return [*parts, text[start:]]


def bibtex_names(field: str) -> list[str]:
    r"""A BibTeX ``author`` field -> names, decoded, ``Last, First`` and ``Last, Jr, First`` turned round.

    >>> bibtex_names(r"Fran{\c{c}}ois Chollet and {\L}ukasz Kaiser and M{\"{u}}ller, J{\'e}r{\^o}me")
    ['François Chollet', 'Łukasz Kaiser', 'Jérôme Müller']
    >>> bibtex_names(r"{Barnes and Noble, Inc.} and van der Berg, Jr, Jan")
    ['Barnes and Noble, Inc.', 'Jan van der Berg Jr']
    """
    names = []
    for name in _split_top(field, re.compile(r"\s+and\s+", re.I)):
        parts = [p.strip() for p in _split_top(name, re.compile(r","))]
        if len(parts) == 2 and parts[1]:
            parts = [parts[1], parts[0]]
        elif len(parts) == 3 and parts[2]:
            parts = [parts[2], parts[0], parts[1]]
        decoded = clean_text(decode_markup(" ".join(p for p in parts if p), latex=True))
        if decoded:
            names.append(decoded)
    return names


def _bib_verbatim(value: str) -> str:
    """A DOI, URL or eprint field: braces dropped, LaTeX escapes (``{\\_}``, ``\\%``) decoded only when present."""
    return clean_text(decode_markup(value, latex=True) if "\\" in value else value.replace("{", "").replace("}", ""))


def bibtex_failure(block: Any) -> str:
    """One line for a BibTeX block bibtexparser could not read: the entry's first line and the reason.

    Example: ``entry `@article{broken2,` cannot be read: unexpected block start: `@article`. Was still
    looking for field-value closing `,` or `}` (the entry does not end before the next one)``."""
    first = next((line.strip() for line in str(getattr(block, "raw", "")).splitlines() if line.strip()), "")
    err = getattr(block, "error", None)
    reason = (getattr(err, "abort_reason", None) or str(err or "") or type(err).__name__).strip()
    reason = reason.split(". Note:", 1)[0].rstrip(".")
    if reason.startswith("Unexpected block start"):
        reason += " (the entry does not end before the next one)"
    reason = reason[:1].lower() + reason[1:]
    return f"entry `{first[:80]}` cannot be read: {reason}"[:300]


LOADERS = {"trending": load_trending, "jsonl": load_jsonl, "json": load_json,
           "csv": load_csv, "bibtex": load_bibtex}


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files named, and corpus files inside folders named (hidden ones skipped), sorted."""
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise CorpusError(f"{path}: no such file or folder", "check the path")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise CorpusError(f"{path}: folder holds no corpus files ({', '.join(FORMATS)})")
            yield from found
        else:
            yield path


def is_blank(path: Path, block: int = 1 << 16) -> bool:
    """True when the file holds nothing but whitespace (read in blocks: it stops at the first text)."""
    with path.open("rb") as fh:
        while data := fh.read(block):
            if data.strip():
                return False
    return True


def load_file(path: Path) -> Iterator[Paper | RecordError]:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CorpusError(f"{path}: unknown extension {path.suffix or '(none)'!r}",
                          f"use one of {', '.join(sorted(FORMATS))}")
    if is_blank(path):
        raise CorpusError(f"{path}: file is empty", "give a file with at least one paper")
    yield from LOADERS[fmt](path)


def load_items(paths: Iterable[str | Path]) -> Iterator[Paper | RecordError]:
    """Every record of every file, in order, one at a time (duplicates not merged: `rag.ingest.ingestor`
    streams this). Raises `CorpusError` on an unreadable file."""
    for path in iter_files(paths):
        yield from load_file(path)


def load_paths(paths: Iterable[str | Path]) -> LoadReport:
    """Load every file into memory, merging duplicates (later wins). Raises `CorpusError` on an unreadable file."""
    report = LoadReport()
    for item in load_items(paths):
        report.add(item)
    return report


def write_jsonl(papers: Iterable[Paper], path: Path) -> None:
    """Our own JSON Lines schema; `load_jsonl` reads it back to equal papers."""
    with path.open("w", encoding="utf-8") as fh:
        for paper in papers:
            record = {k: v for k, v in paper.to_dict().items() if k not in ("id", "source") and v not in (None, [], {})}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
