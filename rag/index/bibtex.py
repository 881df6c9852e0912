r"""`Paper` -> a BibTeX entry that paper-rag's own reader (`rag.index.loaders.load_bibtex`) reads back to the same
paper.

What an import kept is written back: the entry type, the citation key and the venue fields
(``journal``, ``booktitle``, ``publisher``, ``volume``, ``pages``...), which `rag.index.loaders.load_bibtex`
stores in ``Paper.extra`` (``entry_type``, ``bibtex_key``, ``bibtex``). A paper that came from
another format gets ``@misc`` (an arXiv paper) or ``@article`` and a key made of the first
author's surname, the year and the id.

Every value is escaped so it stays one field whatever it holds: braces and backslashes become
``\textbraceleft{}``, ``\textbraceright{}`` and ``\textbackslash{}`` (their own braces balance, so
nothing can close a field early and start another: ``Mallory}, note = {INJECTED`` stays inside the
author field), LaTeX's other special characters are escaped (``\%``, ``\&``, ``\_``...), and text is
written as UTF-8, which BibTeX-aware tools read. A name holding a comma or the word ``and`` is
braced, so the reader keeps it one name. ``doi`` and ``eprint`` are written as they are when they
need no escape (the usual case, and what reference managers expect of them); ``url`` is a URL the
paper was given (not one its abstract holds, nor its arXiv or DOI page, which the reader derives),
with braces, spaces and backslashes percent-encoded.

    >>> from rag.index.corpus import Paper
    >>> print(paper_bibtex(Paper("Attention {Is} All", "An abstract.", ["Ada Lovelace"], 2017)), end="")
    @article{lovelace2017dcb0860f,
      title = {{Attention \textbraceleft{}Is\textbraceright{} All}},
      author = {Ada Lovelace},
      year = {2017},
      abstract = {An abstract.}
    }

Left out: reading BibTeX (`rag.index.corpus`), BibLaTeX's date fields, cross references and string macros.
"""

from __future__ import annotations

import re
from typing import Any

from rag.index.corpus import Paper, extract_urls
from rag.index.loaders import VENUE_FIELDS

_ESCAPES = {"\\": r"\textbackslash{}", "{": r"\textbraceleft{}", "}": r"\textbraceright{}", "%": r"\%", "&": r"\&",
            "$": r"\$", "#": r"\#", "_": r"\_", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}"}
_SPECIAL = re.compile("[" + re.escape("".join(_ESCAPES)) + "]")
_LIGATURE = re.compile(r"(?<=[-`'])(?=[-`'])|(?<=[!?])(?=`)")  # where LaTeX would join characters
_KEY = re.compile(r"^[A-Za-z0-9_:.+/@-]{1,100}$")  # a key BibTeX and biber accept as it is
_ENTRY_TYPE = re.compile(r"^[A-Za-z]{1,30}$")
_VERBATIM = re.compile(r"^[^\s{}\\%#]+$")  # a DOI or eprint that needs no escape


def escape(text: str) -> str:
    r"""Text -> a BibTeX field value that decodes back to ``text`` and cannot end its field.

    >>> escape("50% of {x} \\ y_1")
    '50\\% of \\textbraceleft{}x\\textbraceright{} \\textbackslash{} y\\_1'
    """
    escaped = _SPECIAL.sub(lambda m: _ESCAPES[m.group(0)], text)
    return _LIGATURE.sub("{}", escaped)  # "--" stays two hyphens, "``" two backticks (not a dash, a quote)


def name_field(name: str) -> str:
    """One author for an ``author`` field: escaped, braced when a comma or ``and`` would split it.

    >>> name_field("Ada Lovelace"), name_field("Smith, Jr"), name_field("Ann and Bob")
    ('Ada Lovelace', '{Smith, Jr}', '{Ann and Bob}')
    """
    value = escape(name)
    return "{" + value + "}" if "," in name or re.search(r"\sand\s", name, re.I) else value


def verbatim(value: str) -> str:
    """A DOI or eprint as it is when it is plain (the usual case), else escaped like text."""
    return value if _VERBATIM.match(value) else escape(value)


def url_field(url: str) -> str:
    """A URL with the characters BibTeX or LaTeX would read percent-encoded (the same address).

    >>> url_field("https://x.org/a b{c}%20")
    'https://x.org/a%20b%7Bc%7D%20'
    """
    return re.sub(r"[\s{}\\#]", lambda m: f"%{ord(m.group(0)):02X}", url)


def entry_key(paper: Paper) -> str:
    """The key the paper was imported with, when BibTeX can use it; else surname + year + id."""
    kept = str(paper.extra.get("bibtex_key") or "")
    if _KEY.match(kept):
        return kept
    surname = paper.authors[0].split(",")[0].split()[-1] if paper.authors and paper.authors[0].split() else "paper"
    first = re.sub(r"\W", "", surname.encode("ascii", "ignore").decode()).lower() or "paper"
    return f"{first}{paper.year or ''}{re.sub(r'[^a-z0-9]', '', paper.id.split(':', 1)[-1].lower())[:8]}"


def entry_type(paper: Paper) -> str:
    kept = str(paper.extra.get("entry_type") or "")
    return kept.lower() if _ENTRY_TYPE.match(kept) else ("misc" if paper.arxiv_id else "article")


def paper_bibtex(paper: Paper) -> str:
    """A BibTeX entry that `rag.index.loaders.load_bibtex` reads back to the same paper (same id, title,
    authors, year, abstract, categories as ``keywords``, DOI, arXiv id, entry type, key and venue fields)."""
    kept = paper.extra.get("bibtex")
    venue: dict[str, Any] = kept if isinstance(kept, dict) else {}
    fields = {"title": "{" + escape(paper.title) + "}", "author": " and ".join(name_field(a) for a in paper.authors),
              "year": str(paper.year or "")}
    fields |= {k: escape(str(venue[k])) for k in VENUE_FIELDS if venue.get(k)}
    given = [u for u in paper.urls if u not in extract_urls(paper.abstract)]  # arXiv and DOI links are derived
    fields |= {"keywords": escape(", ".join(paper.categories)), "doi": verbatim(paper.doi or ""),
               "abstract": escape(paper.abstract), "url": url_field(given[0]) if given else ""}
    if paper.arxiv_id:
        fields |= {"eprint": verbatim(paper.arxiv_id), "archiveprefix": "arXiv"}
    body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields.items() if v)
    return f"@{entry_type(paper)}{{{entry_key(paper)},\n{body}\n}}\n"


__all__ = ["entry_key", "entry_type", "escape", "paper_bibtex"]
