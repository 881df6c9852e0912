"""Corpus files -> `Paper` records: loaders, identity and de-duplication.

Formats, chosen by extension:

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
A file that cannot be read at all raises `CorpusError`. Identity: arXiv id, else DOI,
else a hash of the normalised title; the same paper twice is merged, the later record
winning. Left out: chunking, embedding and anything that writes.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import html
import io
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rag.errors import CorpusError, RecordError

FORMATS = {".txt": "trending", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
           ".csv": "csv", ".tsv": "csv", ".bib": "bibtex"}

_ARXIV_NEW = re.compile(r"^(?:arxiv:)?(\d{4}\.\d{4,5})(?:v\d+)?$", re.I)
_ARXIV_OLD = re.compile(r"^(?:arxiv:)?([a-z\-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?$", re.I)
_DOI = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)?(10\.\d{4,9}/\S+)$", re.I)
_URL = re.compile(r"""(?:https?://|(?<![\w/.])(?:www\.|github\.com/|huggingface\.co/))[^\s<>"'()\[\]{}]+""", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ENTITY = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_LATEX = re.compile(r"\\(?:[A-Za-z]+|[\"'`^~=.&%$#_{}])")  # a command (\"o, \v c, \%, \emph) marks LaTeX
_LITERAL = re.compile(r"(?<!\\)([%&])")  # unescaped % and & are literal here: no comments, no table columns
# Longest accepted fields: arXiv caps abstracts at 1,920 characters; a 50 MB "abstract" would
# otherwise take an hour to chunk and embed. Checked before any text processing.
MAX_ABSTRACT_CHARS = 50_000
MAX_TITLE_CHARS = 2_000


@dataclass
class Paper:
    """One abstract and what is known about it. ``id`` is derived, never given."""

    title: str
    abstract: str
    authors: list[str] = field(default_factory=list)
    year: int | None = None
    categories: list[str] = field(default_factory=list)
    doi: str | None = None
    arxiv_id: str | None = None
    urls: list[str] = field(default_factory=list)
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def __post_init__(self) -> None:
        self.title = clean_text(self.title)
        self.abstract = clean_text(self.abstract)
        self.arxiv_id = normalise_arxiv_id(self.arxiv_id) if self.arxiv_id else None
        self.doi = normalise_doi(self.doi) if self.doi else None
        if not self.urls:
            self.urls = extract_urls(self.abstract)
        self.id = paper_id(self.title, self.arxiv_id, self.doi)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def stored(cls, record: dict[str, Any], paper_id: str) -> Paper:
        """A paper from a record a `Paper` wrote (`to_dict`, empty fields possibly left out), with
        its stored id: already normalised, so not normalised again (30x faster than `Paper(**record)`).

        >>> Paper.stored({"title": "T", "abstract": "A.", "year": 2020}, "title:x").authors
        []
        """
        paper = cls.__new__(cls)
        for f in fields(cls):
            factory: Any = f.default_factory
            value = record[f.name] if f.name in record else (f.default if f.default is not MISSING else factory())
            setattr(paper, f.name, value)
        paper.id = paper_id
        return paper

    @property
    def links(self) -> list[str]:
        """arXiv and DOI pages first, then the URLs found in the abstract."""
        out = []
        if self.arxiv_id:
            out.append(f"https://arxiv.org/abs/{self.arxiv_id}")
        if self.doi:
            out.append(f"https://doi.org/{self.doi}")
        return out + [u for u in self.urls if u not in out]


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


# ---------------------------------------------------------------- identity and text


def clean_text(text: str) -> str:
    """NFC, control characters dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFC", str(text))
    return " ".join(_CONTROL.sub(" ", text).split())


def decode_markup(text: str, latex: bool | None = None) -> str:
    """HTML entities and LaTeX (BibTeX, the arXiv snapshot) -> Unicode; plain text is returned as is.

    ``latex=None`` decodes LaTeX only when the text holds a LaTeX command, so ``40% of $5`` in
    plain text stays as written; BibTeX fields pass ``latex=True``. URLs are kept verbatim. Math is
    kept readable: ``$5\\times$`` -> ``5×``, ``$O(n^2)$`` -> ``O(n^2)``.

    >>> decode_markup(r"Bernhard Sch\\"olkopf, Mario Lu\\v ci\\'c: 80.5\\% on Q\\&A &#8221;")
    'Bernhard Schölkopf, Mario Lučić: 80.5% on Q&A ”'
    """
    text = str(text)
    if "&" in text:
        text = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
    for _ in range(2):  # twice: a doubly escaped export (``5\\$\\textbackslash times\\$``) needs a second pass
        if not (latex or (latex is None and _LATEX.search(text))):
            break
        text, latex = _latex_to_text(text), None
    return text


@functools.cache
def _latex_decoder() -> Any:
    """pylatexenc's decoder, knowing the text-mode escapes of LaTeX's special characters too
    (``\\textbraceleft{}`` -> ``{``: its default drops them; `rag.bibtex` writes them)."""
    from pylatexenc.latex2text import LatexNodes2Text, MacroTextSpec, get_default_latex_context_db

    db = get_default_latex_context_db()
    db.add_context_category("paper-rag", prepend=True, macros=[
        MacroTextSpec(name, text) for name, text in (("textbraceleft", "{"), ("textbraceright", "}"),
                                                     ("textbackslash", "\\"), ("textasciicircum", "^"),
                                                     ("textasciitilde", "~"))])
    return LatexNodes2Text(math_mode="text", latex_context=db)


def _latex_to_text(text: str) -> str:
    """One pylatexenc pass, URLs and literal ``%`` and ``&`` protected."""
    urls = _URL.findall(text)
    for n, url in enumerate(urls):
        text = text.replace(url, f"RAGURLSLOT{n}X", 1)
    try:
        out = _latex_decoder().latex_to_text(_LITERAL.sub(r"\\\1", text))
    except Exception:  # noqa: BLE001 - pylatexenc is lenient, but a record must never fail on decoding
        return text
    for n, url in enumerate(urls):
        out = out.replace(f"RAGURLSLOT{n}X", url, 1)
    return out.replace("\xa0", " ")


def fold(text: str) -> str:
    """Case- and accent-insensitive form for matching names: ``"Schölkopf"`` -> ``"scholkopf"``."""
    text = unicodedata.normalize("NFKD", str(text).casefold())
    return "".join(c for c in text if not unicodedata.combining(c))


def normalise_title(title: str) -> str:
    """Case-, accent- and punctuation-insensitive key: ``"BERT: Pre-training"`` -> ``"bert pre training"``."""
    return " ".join(re.sub(r"[^\w]+", " ", fold(title)).split())


def normalise_arxiv_id(value: str) -> str | None:
    value = value.strip()
    for pattern in (_ARXIV_NEW, _ARXIV_OLD):
        if m := pattern.match(value):
            return m.group(1)
    return None


def normalise_doi(value: str) -> str | None:
    m = _DOI.match(value.strip())
    return m.group(1).lower() if m else None


def paper_id(title: str, arxiv_id: str | None = None, doi: str | None = None) -> str:
    """``arxiv:2301.00001``, else ``doi:10.1/x``, else ``title:<16 hex of sha1(normalised title)>``."""
    if arxiv_id:
        return f"arxiv:{arxiv_id}"
    if doi:
        return f"doi:{doi}"
    return "title:" + hashlib.sha1(normalise_title(title).encode()).hexdigest()[:16]


def extract_urls(text: str) -> list[str]:
    """Code and project links in an abstract, de-duplicated, trailing punctuation removed."""
    out: list[str] = []
    for m in _URL.finditer(text):
        url = m.group(0).rstrip(".,;:!?")
        if not url.lower().startswith("http"):
            url = "https://" + url
        if url not in out:
            out.append(url)
    return out


# ---------------------------------------------------------------- record -> Paper


def _as_list(value: Any, sep: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [clean_text(" ".join(v) if isinstance(v, list) else v) for v in value if v]
    parts = re.split(sep, str(value))
    return [clean_text(p) for p in parts if clean_text(p)]


_INITIALS = re.compile(r"^(?:[A-Z]\.?-?\s*)+$")


def _given(name: str) -> bool:
    """Whether ``name`` reads as given names only: one word, or initials (``J. R. R.``)."""
    return " " not in name or bool(_INITIALS.match(name))


def split_authors(text: str) -> list[str]:
    """An author string (CSV, TSV, JSON) -> names, with "Last, First" turned round.

    >>> split_authors("Power, Alethea, Burda, Yuri")
    ['Alethea Power', 'Yuri Burda']
    >>> split_authors("Turing, Alan; van der Berg, Jan and Tolkien, J. R. R.")
    ['Alan Turing', 'Jan van der Berg', 'J. R. R. Tolkien']
    >>> split_authors("Ada Lovelace, Alan Turing and Grace Hopper")
    ['Ada Lovelace', 'Alan Turing', 'Grace Hopper']
    """
    groups = [g for g in re.split(r";|\s+and\s+", text) if clean_text(g)]
    names: list[str] = []
    for group in groups:
        parts = [clean_text(p) for p in group.split(",") if clean_text(p)]
        surnames, given = parts[0::2], parts[1::2]
        paired = len(parts) % 2 == 0 and all(_given(g) for g in given) and (
            len(groups) > 1 and len(parts) == 2 or all(" " not in s for s in surnames))
        names += [f"{g} {s}" for s, g in zip(surnames, given)] if paired else parts
    return names


def _year(record: dict[str, Any]) -> int | None:
    for key in ("year", "update_date", "date", "published"):
        value = record.get(key)
        if value and (m := re.search(r"\b(1[89]\d\d|2\d\d\d)\b", str(value))):
            return int(m.group(1))
    return None


_KNOWN = {"id", "title", "abstract", "authors", "year", "categories", "doi", "arxiv_id",
          "urls", "update_date", "source", "extra", "authors_parsed", "versions", "url"}


def _shape_problem(record: dict[str, Any]) -> tuple[str, str] | None:
    """(problem, fix) when a field has a type no loader can use, e.g. ``"extra": [1, 2]``."""
    extra = record.get("extra")
    if extra is not None and not isinstance(extra, dict):
        return f"`extra` must be an object, not {type(extra).__name__}", 'give `extra` as {"key": value, ...}'
    parsed = record.get("authors_parsed")
    if parsed is not None and not (isinstance(parsed, list) and all(
            isinstance(a, list) and all(isinstance(p, str) for p in a) for a in parsed)):
        return ("`authors_parsed` must be a list of [last, first, suffix] lists of strings",
                'give e.g. [["Turing", "Alan", ""]], or use `authors`')
    authors = record.get("authors")
    if isinstance(authors, list) and not all(
            isinstance(a, str) or (isinstance(a, list) and all(isinstance(p, str) for p in a)) for a in authors):
        return "`authors` must be a string or a list of names", 'give e.g. ["Ada Lovelace", "Alan Turing"]'
    return None


def _encoding_problem(paper: Paper) -> str | None:
    """Why the paper cannot be stored as UTF-8 text (a lone surrogate such as ``"\\ud800"``), or None."""
    try:
        json.dumps([paper.title, paper.abstract, paper.authors, paper.categories, paper.urls, paper.extra],
                   ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        return f"text holds a lone surrogate ({err.object[err.start:err.end]!a}), which is not a character"
    except (RecursionError, ValueError) as err:  # a cycle or nesting too deep to store
        return f"a field cannot be stored as JSON ({type(err).__name__})"
    return None


def paper_from_record(record: dict[str, Any], source: str, line: int, decoded: bool = False) -> Paper | RecordError:
    """A dict in our schema or the arXiv snapshot's -> `Paper`, or the reason it is not one.

    ``decoded``: the text fields are already Unicode (a BibTeX loader decoded them): decoding
    twice would read a literal backslash that the first pass produced as LaTeX."""
    if not isinstance(record, dict):
        return RecordError(source, line, f"expected an object, got {type(record).__name__}")
    record = {str(k).strip().lower(): v for k, v in record.items()}
    if problem := _shape_problem(record):
        return RecordError(source, line, *problem)
    try:
        paper = _paper(record, source, line, decoded)
    except (TypeError, ValueError, RecursionError) as err:  # a shape _shape_problem did not foresee
        return RecordError(source, line, f"malformed record ({type(err).__name__}: {str(err)[:120]})")
    if isinstance(paper, Paper) and (encoding := _encoding_problem(paper)):
        return RecordError(source, line, encoding, "re-export the file as UTF-8 text")
    return paper


def _paper(record: dict[str, Any], source: str, line: int, decoded: bool = False) -> Paper | RecordError:
    """`paper_from_record` after the shape checks: lower-cased keys, known field types."""

    def decode(text: str) -> str:
        return text if decoded else decode_markup(text)
    for key, cap in (("title", MAX_TITLE_CHARS), ("abstract", MAX_ABSTRACT_CHARS)):
        if isinstance(record.get(key), str) and len(record[key]) > cap:
            return RecordError(source, line, f"{key} is {len(record[key]):,} characters, over the limit of {cap:,}",
                               f"shorten the {key}; this tool indexes abstracts, not full texts")
    title = clean_text(decode(record.get("title") or ""))
    abstract = clean_text(decode(record.get("abstract") or ""))
    if not title:
        return RecordError(source, line, "record has no title", "add a non-empty `title`")
    if not abstract:
        return RecordError(source, line, f"record {title[:60]!r} has no abstract", "add a non-empty `abstract`")
    raw_id = str(record.get("arxiv_id") or record.get("id") or "")
    authors = record.get("authors")
    if isinstance(authors, str):
        authors = split_authors(decode(authors))
    elif record.get("authors_parsed") and not authors:
        authors = [" ".join(reversed([p for p in a[:2] if p])) for a in record["authors_parsed"]]
    if isinstance(authors, list):
        authors = [decode(" ".join(a) if isinstance(a, list) else a) for a in authors if a]
    categories = record.get("categories")
    urls = record.get("urls") or ([record["url"]] if record.get("url") else [])
    extra = dict(record.get("extra") or {})
    extra.update({k: v for k, v in record.items() if k not in _KNOWN and v not in (None, "")})
    return Paper(
        title=title,
        abstract=abstract,
        authors=_as_list(authors, r",\s*"),
        year=_year(record),
        categories=_as_list(categories, r"[\s,;]+"),
        doi=str(record["doi"]) if record.get("doi") else None,
        arxiv_id=raw_id or None,
        urls=_as_list(urls, r"\s+") + [u for u in extract_urls(abstract) if u not in _as_list(urls, r"\s+")],
        source=source,
        extra=extra,
    )


# ---------------------------------------------------------------- loaders


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
    ``Last, First``. The entry type, key and venue fields are kept in ``extra`` (`rag.bibtex` writes
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
    """Every record of every file, in order, one at a time (duplicates not merged: `rag.ingest`
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
