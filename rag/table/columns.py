"""The columns of an extraction table: the built-in ones, each a question asked of one abstract,
and free-text ones given as questions (``--column "Which optimizer?"``).

    >>> [c.key for c in parse_columns("task,result", ["Which optimizer?"])]
    ['task', 'result', 'Which optimizer?']

A column's ``key`` is what the table's JSON names it: the built-in name, or the question itself.
``code`` is read from the abstract's links, never asked of a model. Left out: asking and checking
(`rag.table.cells`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from rag.errors import InputError

MAX_QUESTION_CHARS = 300


@dataclass(frozen=True)
class Column:
    key: str          # "task" ... or the question of a free-text column
    question: str     # what is asked of each abstract
    label: str        # the header shown to people
    links: bool = False  # read from the abstract's URLs, not asked of a model

    def fingerprint(self, prompt: str) -> str:
        """What a cached cell of this column depends on besides the paper and the model: its
        question and the prompt that asks it (a changed prompt never reuses old cells)."""
        return hashlib.sha256(f"{self.key}\n{self.question}\n{prompt}".encode()).hexdigest()[:16]


BUILTIN: dict[str, Column] = {c.key: c for c in [
    Column("task", "What task or problem does the paper address?", "Task"),
    Column("method", "What method, model or contribution does the paper propose?", "Method"),
    Column("data", "On which datasets or benchmarks is it evaluated?", "Data"),
    Column("result", "What is the main result, with its number?", "Result"),
    Column("model_size", "How many parameters does the model have?", "Model size"),
    Column("code", "Where are the code or the models released (a link)?", "Code", links=True),
]}
DEFAULT_COLUMNS = ("task", "method", "data", "result")


def parse_columns(names: str | Sequence[str] | None, questions: Sequence[str] = ()) -> list[Column]:
    """Built-in columns by name (comma-separated or a list; ``None``: `DEFAULT_COLUMNS` unless
    ``questions`` are given), then one column per free-text question. An unknown name or an empty or
    over-long question is an `InputError` naming the accepted ones."""
    if isinstance(names, str):
        names = [n for n in (part.strip() for part in names.split(",")) if n]
    if names is None:
        names = [] if questions else list(DEFAULT_COLUMNS)
    out: list[Column] = []
    for name in names:
        key = name.strip().lower().replace("-", "_").replace(" ", "_")
        if key not in BUILTIN:
            raise InputError(f"unknown column {name!r}",
                             f"use built-in columns ({', '.join(BUILTIN)}), or ask your own question with "
                             f'--column "QUESTION"')
        out.append(BUILTIN[key])
    for question in questions:
        text = " ".join(question.split())
        if not text or len(text) > MAX_QUESTION_CHARS:
            raise InputError(f"column question {question[:60]!r} is {'empty' if not text else 'too long'}",
                             f"ask a question of 1 to {MAX_QUESTION_CHARS} characters, e.g. --column "
                             '"Which optimizer is used?"')
        out.append(Column(text, text, text))
    keys = [c.key for c in out]
    if len(set(keys)) != len(keys):
        raise InputError(f"a column is named twice ({', '.join(k for k in dict.fromkeys(keys) if keys.count(k) > 1)})",
                         "name each column once")
    if not out:
        raise InputError("no columns", f"name built-in columns ({', '.join(BUILTIN)}) or ask --column \"QUESTION\"")
    return out


__all__ = ["BUILTIN", "Column", "DEFAULT_COLUMNS", "parse_columns"]
