"""A chat message that asks for a table ("make a table of test-time adaptation papers", "compare
CoTTA, PSMT and RoTTA in a table"), read into what the table is of: `table_request`.

The rule, chosen so that prose comparisons keep their answer (`rag.answer.comparison`: "How do Bone and
HRA differ?", "Compare 'X' and 'Y': what does each recommend ...?", every comparison of the
evaluation sets), a message is a table request when

1. it asks for the table form: a table made, given or shown ("make a table of ...", "give me a
   comparison table of ...", "Table of ..."), something put "in/as/into a table", "in tabular
   form", "tabulate ...", or a comparison "side by side"; or
2. it is a bare "compare A, B and C": the verb, then two or more paper names and nothing else (no
   question, no colon, no aspect such as "the accuracy of"), where a name is a quoted title, a
   paper id, or a few words with a capital letter and none of "the, of, on, how ..." (so
   "compare the accuracy of CoTTA and PSMT" and "compare test-time adaptation methods" stay
   answers: they ask about something, and the prose path answers that).

What the table is of comes from the rest of the message: two or more names (rule 2's names) are
the rows; "them", "these papers" are the papers the conversation's last answer cited; anything
else is a search ("test-time adaptation papers" -> ``test-time adaptation``). Built-in columns
named before "of" or after "by/with/showing" ("the methods and datasets of ...", "... with
their results") are the columns (``method, data`` ...); a leading count ("a table of 5 ...") is
the number of rows. English only, as `rag.answer.comparison` is.

    >>> table_request("make a table of test-time adaptation papers")
    TableRequest(query='test-time adaptation', papers=(), columns=(), earlier=False, k=None)
    >>> table_request("compare CoTTA, PSMT and RoTTA in a table")
    TableRequest(query=None, papers=('CoTTA', 'PSMT', 'RoTTA'), columns=(), earlier=False, k=None)
    >>> table_request("tabulate the methods and datasets of papers on continual learning")
    TableRequest(query='continual learning', papers=(), columns=('method', 'data'), earlier=False, k=None)
    >>> table_request("side by side comparison of 'Don't Stop Pretraining' and title:ab12").papers
    ("Don't Stop Pretraining", 'title:ab12')
    >>> table_request("Compare RAdam with Adam.").papers, table_request("put them in a table").earlier
    (('RAdam', 'Adam'), True)
    >>> [table_request(q) for q in ("compare the accuracy of CoTTA and PSMT", "How do Bone and HRA differ?",
    ...  "Compare 'A' and 'B': what does each recommend?", "Which paper reports results in Table 3?")]
    [None, None, None, None]

Left out: making the table (`rag.table.chat`; `TableRequest.chosen_columns` parses its columns),
free-text columns (``rag table --column``), and requests that refer to an earlier table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.table.columns import Column, parse_columns

# built-in column -> the words that name it in a request (longest first where one contains another)
COLUMN_WORDS: dict[str, tuple[str, ...]] = {
    "model_size": ("model sizes", "model size", "parameter counts", "parameter count", "number of parameters",
                   "parameters", "sizes", "size"),
    "code": ("code links", "code link", "code", "repositories", "repository", "repos", "repo", "github"),
    "task": ("tasks", "task", "problems", "problem"),
    "method": ("methods", "method", "approaches", "approach", "techniques", "technique", "contributions",
               "contribution"),
    "data": ("datasets", "dataset", "data", "benchmarks", "benchmark"),
    "result": ("results", "result", "findings", "finding", "performance", "accuracy", "scores", "score"),
}
_WORD_COLUMN = {w: key for key, words in COLUMN_WORDS.items() for w in words}
_TERM = "(?:" + "|".join(re.escape(w) for w in sorted(_WORD_COLUMN, key=len, reverse=True)) + ")"
_LIST = rf"{_TERM}(?:\s*(?:,\s*(?:and\s+)?|\s(?:and|&|or)\s|/)\s*{_TERM})*"

_ASKED = r"(?:make|create|build|give|show|produce|generate|draw(?:\s+up)?|prepare|compile|put\s+together|write)"
_KIND = r"(?:comparison|comparative|summary|overview|extraction|side[- ]by[- ]side)"
_POLITE = r"(?:please|pls|can\s+you|could\s+you|would\s+you|i(?:'d|\s+would)\s+like(?:\s+to\s+see)?|i\s+(?:want|need))"
_LEAD = re.compile(  # what opens a request: politeness, then the table frame
    rf"^(?:{_POLITE}\s+)*"
    rf"(?:(?:{_ASKED})(?:\s+(?:me|us))?\s+(?:an?\s+|the\s+)?(?:{_KIND}\s+)?(?:table|tabular\s+\w+)"
    rf"(?:\s+(?:of|for|on|about|comparing|with|listing|showing))?"
    rf"|(?:an?\s+)?(?:{_KIND}\s+)?table\s+(?:of|for|comparing|listing)"
    rf"|tabulate|(?:an?\s+)?side[- ]by[- ]side\s+(?:comparison|table)\s+(?:of|for|between)"
    rf"|compare|contrast|put|present|list|show|display|arrange|organi[sz]e|summari[sz]e|lay\s+out)(?:\s*:)?\s+",
    re.IGNORECASE)
_MIDDLE = re.compile(rf"[\s,]*\b(?:(?:in|as|into)\s+(?:an?\s+|one\s+)?(?:{_KIND}\s+)?table(?:\s+form)?|"
                     r"in\s+(?:tabular|table)\s+form|side[- ]by[- ]side)\b", re.IGNORECASE)
_FORM = re.compile(r"\b(?:tabulate|side[- ]by[- ]side|tabular\s+form)\b|\b(?:in|as|into)\s+(?:an?\s+|one\s+)?"
                   rf"(?:{_KIND}\s+)?table\b(?!\s*\d)|^(?:\S+\s+){{0,6}}?(?:{_ASKED}|like|want|need)(?:\s+(?:me|us))?\s+(?:an?\s+|the\s+)?"
                   rf"(?:{_KIND}\s+)?table\b|^(?:an?\s+)?(?:{_KIND}\s+)?table\s+(?:of|for|comparing|listing)\b",
                   re.IGNORECASE)
_ASKING = re.compile(r"^(?:can|could|would)\s+you\b", re.IGNORECASE)  # a request, though it ends in "?"
_BARE = re.compile(rf"^(?:{_POLITE}\s+)*compare\s+\S", re.IGNORECASE)
_COLUMNS_FIRST = re.compile(rf"^(?:the\s+|their\s+)?(?P<cols>{_LIST})\s+(?:of|for|in|across|from)\s+(?P<rest>.+)$",
                            re.IGNORECASE)
_COLUMNS_LAST = re.compile(rf"^(?P<rest>.+?)[\s,]+(?:by|with|showing|listing|including|giving|covering|on|"
                           rf"for|(?:with\s+)?columns?)\s+(?:(?:their|the|its|columns?)\s+)*(?P<cols>{_LIST})$",
                           re.IGNORECASE)
_COUNT = re.compile(r"^(?:the\s+)?(?:top\s+)?(?P<k>\d{1,2})\s+(?P<rest>.+)$", re.IGNORECASE)
_PAPERS_ON = re.compile(r"^(?:the\s+|all\s+|some\s+)?(?:recent\s+)?(?:papers|works|studies|articles|publications)"
                        r"\s+(?:on|about|in|for|that\s+\w+|which\s+\w+|addressing|studying|proposing|using)\s+",
                        re.IGNORECASE)
_PAPERS_TAIL = re.compile(r"\s+(?:papers|works|studies|articles|publications|methods|approaches)$", re.IGNORECASE)
_EARLIER = re.compile(r"^(?:them|these|those|both|all\s+of\s+them|(?:the|these|those|both|all)\s+(?:\d+\s+)?"
                      r"(?:cited\s+)?(?:papers|ones)(?:\s+(?:above|you\s+cited|cited))?|the\s+cited\s+ones)$",
                      re.IGNORECASE)
_QUOTED = re.compile(r"[\"“'‘]([^\"”’]+?)[\"”'’](?=\s*(?:,|\band\b|\bwith\b|\bto\b|\bvs\.?|\bversus\b|&|$))")
_ID = re.compile(r"^(?:title:\S+|arxiv:\S+|doi:\S+|\d{4}\.\d{4,5}(?:v\d+)?|10\.\d{4,9}/\S+)$", re.IGNORECASE)
_SPLIT = re.compile(r"\s*(?:,\s*(?:and\s+)?|\s+(?:and|with|to|vs\.?|versus|&)\s+)\s*", re.IGNORECASE)
_NOT_IN_NAMES = re.compile(r"\b(?:the|a|an|of|on|in|for|to|at|by|from|how|what|which|why|whether|their|its|"
                           r"between|about|regarding|terms|respect|papers?|methods?)\b", re.IGNORECASE)
MAX_NAME_WORDS = 6


@dataclass(frozen=True)
class TableRequest:
    query: str | None              # a search whose papers are the rows
    papers: tuple[str, ...] = ()   # papers named: ids, titles, or names to look up
    columns: tuple[str, ...] = ()  # built-in column keys named in the request; () = the defaults
    earlier: bool = False          # "them": the papers the last answer cited
    k: int | None = None           # rows asked for ("a table of 5 ...")

    def chosen_columns(self) -> list[Column]:
        """The columns of the table: those the request names, else the default ones."""
        return parse_columns(list(self.columns) or None)


def column_keys(phrase: str) -> tuple[str, ...]:
    """The built-in columns a list of column words names, in order, each once.

    >>> column_keys("methods, datasets and results"), column_keys("number of parameters / code")
    (('method', 'data', 'result'), ('model_size', 'code'))
    """
    found = re.findall(_TERM, phrase, re.IGNORECASE)
    return tuple(dict.fromkeys(_WORD_COLUMN[w.lower()] for w in found))


def names_in(text: str) -> tuple[str, ...] | None:
    """Two or more paper names, or None when ``text`` is not only a list of names.

    >>> names_in("CoTTA, PSMT and RoTTA"), names_in("'Dice Loss for NLP' with Adam")
    (('CoTTA', 'PSMT', 'RoTTA'), ('Dice Loss for NLP', 'Adam'))
    >>> names_in("the accuracy of CoTTA and PSMT"), names_in("test-time adaptation and continual learning")
    (None, None)
    """
    quoted: list[str] = []

    def hold(m: re.Match[str]) -> str:
        quoted.append(m.group(1).strip())
        return f"\x00{len(quoted) - 1}\x00"

    parts = [p.strip() for p in _SPLIT.split(_QUOTED.sub(hold, text.strip())) if p.strip()]
    names: list[str] = []
    for part in parts:
        if re.fullmatch(r"\x00\d+\x00", part):
            names.append(quoted[int(part.strip("\x00"))])
        elif _ID.match(part) or (re.search(r"[A-Z]", part) and "\x00" not in part and not _NOT_IN_NAMES.search(part)
                                 and len(part.split()) <= MAX_NAME_WORDS and not re.search(r"[?:;]", part)):
            names.append(part)
        else:
            return None
    return tuple(dict.fromkeys(names)) if len(names) >= 2 else None


def table_request(message: str) -> TableRequest | None:
    """What table ``message`` asks for, or None when it asks a question (answered in prose)."""
    text = " ".join(message.split()).strip()
    form = _FORM.search(text) is not None
    if not form and not _BARE.match(text):
        return None
    subject = _LEAD.sub("", text.rstrip(".!?"), count=1)
    subject = _MIDDLE.sub(" ", subject).strip(" ,.")
    if not form:  # rule 2: names only, no question
        names = names_in(subject)
        asks = re.search(r"\?(?!$)|:(?!\S)", text) or (text.endswith("?") and not _ASKING.match(text))
        return TableRequest(None, names) if names and not asks else None
    columns: tuple[str, ...] = ()
    for pattern in (_COLUMNS_FIRST, _COLUMNS_LAST):
        if (m := pattern.match(subject)) is not None:
            columns += column_keys(m.group("cols"))
            subject = m.group("rest").strip(" ,")
    k = None
    if (m := _COUNT.match(subject)) is not None:
        k, subject = int(m.group("k")), m.group("rest")
    subject = subject.rstrip("?").strip()
    columns = tuple(dict.fromkeys(columns))
    if _EARLIER.match(subject):
        return TableRequest(None, (), columns, True, k)
    names = names_in(subject)
    if names:
        return TableRequest(None, names, columns, False, k)
    topic = _PAPERS_TAIL.sub("", _PAPERS_ON.sub("", subject)).strip()
    return TableRequest(topic or subject or None, (), columns, False, k)


__all__ = ["COLUMN_WORDS", "TableRequest", "column_keys", "names_in", "table_request"]
