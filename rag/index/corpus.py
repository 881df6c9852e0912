"""The `Paper` record: its fields, its identity, its text, and a raw record -> `Paper`.

Identity: arXiv id, else DOI, else a hash of the normalised title (`paper_id`), so the same
paper from two files is one `Paper`. Text is NFC with control characters dropped and
whitespace collapsed; HTML entities and LaTeX (BibTeX, the arXiv snapshot) are decoded to
Unicode (`decode_markup`). `paper_from_record` turns a dict in our schema or the arXiv
snapshot's into a `Paper`, or into the `RecordError` (file, line, fix) that says why it is
not one: a missing title or abstract, a field past its length limit, a field of the wrong
type, text that is not UTF-8. Left out: reading files and folders (`rag.index.loaders`),
chunking, embedding and anything that writes.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import re
import unicodedata
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from rag.errors import RecordError

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
    (``\\textbraceleft{}`` -> ``{``: its default drops them; `rag.index.bibtex` writes them)."""
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
