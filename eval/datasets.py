"""Evaluation datasets: read a question set into `Item`s, one per single question or conversation.

Three sources, all read by `load_dataset(name_or_path, settings)`:

- a JSON Lines file in the format of ``eval/README.md`` (single questions, and conversations
  whose ``turns`` are asked in order in one chat);
- a feedback export from the web chat (lines with ``question``, ``answer``, ``rating`` and
  ``citations``), recognised by its ``rating`` field: a thumbs-up answer's cited papers become
  the gold papers; a thumbs-up abstention becomes an unanswerable question; a thumbs-down
  answer keeps its question with *unknown* gold (``None``, type ``feedback-down``), scored on
  latency, support and the judge only;
- built-in names: ``dev`` (``data/eval/dev.jsonl``), ``holdout-dev`` and ``holdout-test`` (questions
  written apart from it, split once: tune on the first, score the second) and ``title-abstract``
  (every paper of the configured index: its title is the question, the paper is the gold).

``gold == []`` means unanswerable; ``gold is None`` means not known. Left out: running the
questions (``eval.run``) and scoring them (``eval.metrics``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.bundled import DEV_SET, HOLDOUT_SETS, bundled_file
from rag.errors import InputError

BUILTIN = {"dev": bundled_file(DEV_SET), **{name: bundled_file(path) for name, path in HOLDOUT_SETS.items()}}
GENERATED = ("title-abstract",)


@dataclass
class Question:
    """One scored question: a single question or one turn of a conversation."""

    id: str                        # "q001", or "c01.t2" for a conversation's second turn
    question: str
    gold: list[str] | None         # [] = unanswerable, None = unknown
    answers: list[str] = field(default_factory=list)
    type: str = "factoid"
    lang: str = "en"
    item: str = ""                 # the dataset record it belongs to
    turn: int = 0                  # 1-based turn within a conversation; 0 for a single question
    where: str = ""                # "file:line" it was read from, for error messages
    subject: list[str] | None = None  # a conversation turn: the gold papers of the turn before it

    @property
    def answerable(self) -> bool | None:
        return None if self.gold is None else bool(self.gold)


@dataclass
class Item:
    """A unit of work: its questions are asked in order in one conversation."""

    id: str
    type: str
    questions: list[Question]


@dataclass
class Dataset:
    name: str                      # "dev", "title-abstract" or the file path as given
    source: str                    # "jsonl" | "feedback" | "generated"
    items: list[Item]
    fingerprint: str               # sha256 of the questions, to tell two datasets of one name apart

    @property
    def questions(self) -> list[Question]:
        return [q for item in self.items for q in item.questions]


def _fingerprint(items: list[Item]) -> str:
    data = [[q.id, q.question, q.gold, q.answers] for item in items for q in item.questions]
    return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest()[:16]


def _str_list(value: Any, where: str, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{where}: `{name}` must be a list of strings", "see eval/README.md, Dataset format")
    return value


def _question(record: dict[str, Any], where: str, **fields: Any) -> Question:
    text = record.get("question")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: no `question`", "see eval/README.md, Dataset format")
    gold = record.get("gold")
    gold = None if gold is None else _str_list(gold, where, "gold")
    return Question(question=text, gold=gold, answers=_str_list(record.get("answers"), where, "answers"),
                    where=where, **fields)


def parse_record(record: dict[str, Any], where: str, default_id: str) -> Item:
    """One line of a JSON Lines dataset -> `Item`.

    >>> turns = [{"question": "Who made X?", "gold": ["p"]}, {"question": "When?", "gold": ["p"]}]
    >>> parse_record({"id": "c1", "type": "conversation", "turns": turns}, "x", "r1").questions[1].id
    'c1.t2'
    """
    rid = str(record.get("id") or default_id)
    rtype = str(record.get("type") or ("conversation" if "turns" in record else "question"))
    lang = str(record.get("lang") or "en")
    if "turns" in record:
        turns = record["turns"]
        if not isinstance(turns, list) or not turns:
            raise InputError(f"{where}: `turns` must be a non-empty list", "see eval/README.md, Dataset format")
        questions = [_question(t, f"{where} turn {i}", id=f"{rid}.t{i}", type=rtype, lang=lang, item=rid, turn=i)
                     for i, t in enumerate(turns, 1)]
        for before, after in zip(questions, questions[1:]):
            after.subject = before.gold
    else:
        questions = [_question(record, where, id=rid, type=rtype, lang=lang, item=rid)]
    return Item(rid, rtype, questions)


def feedback_item(record: dict[str, Any], where: str, rid: str) -> Item:
    """A web-chat feedback line -> `Item` (see the module docstring for the rules)."""
    rating = str(record.get("rating", "")).lower()
    if rating not in ("up", "down"):
        raise InputError(f"{where}: `rating` must be \"up\" or \"down\", not {record.get('rating')!r}",
                         "export feedback from the web chat unchanged")
    cited = [str(c["paper_id"]) for c in record.get("citations") or [] if isinstance(c, dict) and c.get("paper_id")]
    gold: list[str] | None = None
    if rating == "up" and cited:
        gold = list(dict.fromkeys(cited))
    elif rating == "up" and record.get("abstained") is True:  # as rag.answer.answerer decided it, not by its wording
        gold = []  # a thumbs-up abstention: the user agrees the papers do not answer it
    rtype = f"feedback-{rating}"
    q = _question({"question": record.get("question"), "gold": gold}, where, id=rid, type=rtype, item=rid)
    return Item(rid, rtype, [q])


def read_jsonl(path: Path, name: str | None = None) -> Dataset:
    if not path.is_file():
        raise InputError(f"dataset {path} does not exist",
                         f"give a JSON Lines file or one of: {', '.join([*BUILTIN, *GENERATED])}")
    items: list[Item] = []
    source = "jsonl"
    seen: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: not JSON ({err.msg})", "one JSON object per line") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}: not a JSON object", "one JSON object per line")
        if "rating" in record:
            source = "feedback"
            item = feedback_item(record, where, str(record.get("id") or f"f{n:04d}"))
        else:
            item = parse_record(record, where, f"r{n:04d}")
        if item.id in seen:
            raise InputError(f"{where}: id {item.id!r} appears twice", "give every record its own id")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise InputError(f"dataset {path} holds no questions", "see eval/README.md, Dataset format")
    return Dataset(name or str(path), source, items, _fingerprint(items))


def gold_lookup(papers: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every key a question set may name a paper by -> the paper ids it matches.

    Keys: the paper id itself, ``arxiv:<id>``, ``doi:<doi>`` and ``title:<normalised title>``
    (case, accents and punctuation ignored, as identity does)."""
    from rag.index.corpus import normalise_title

    lookup: dict[str, list[str]] = {}
    for pid, paper in papers.items():
        keys = {pid, "title:" + normalise_title(paper.title)}
        keys |= {f"arxiv:{paper.arxiv_id}"} if paper.arxiv_id else set()
        keys |= {f"doi:{paper.doi}"} if paper.doi else set()
        for key in keys:
            lookup.setdefault(key, []).append(pid)
    return lookup


def reference_keys(ref: str) -> list[str]:
    """Lookup keys for one gold reference, most specific first.

    >>> reference_keys("https://arxiv.org/abs/2301.00001v2")[:2]
    ['https://arxiv.org/abs/2301.00001v2', 'arxiv:2301.00001']
    >>> reference_keys("BERT: Pre-training")[-1]
    'title:bert pre training'
    """
    from rag.index.corpus import normalise_arxiv_id, normalise_doi, normalise_title

    ref = ref.strip()
    arxiv = normalise_arxiv_id(ref.rsplit("arxiv.org/abs/", 1)[-1].rsplit("arxiv.org/pdf/", 1)[-1].removesuffix(".pdf"))
    doi = normalise_doi(ref)
    return [ref, *([f"arxiv:{arxiv}"] if arxiv else []), *([f"doi:{doi}"] if doi else []),
            "title:" + normalise_title(ref)]


def resolve_gold(dataset: Dataset, papers: Mapping[str, Any]) -> Dataset:
    """The dataset with gold papers given by id, exact title, arXiv id or DOI mapped to paper ids.

    Raises `InputError` naming file, line and reference for the first reference that matches no
    paper of the index (or several): a silent recall of 0 would look like a retrieval failure."""
    lookup = gold_lookup(papers)
    for q in dataset.questions:
        if q.gold:
            q.gold = list(dict.fromkeys(_resolve(ref, lookup, q) for ref in q.gold))
    for item in dataset.items:
        for before, after in zip(item.questions, item.questions[1:]):
            after.subject = before.gold
    dataset.fingerprint = _fingerprint(dataset.items)
    return dataset


def _resolve(ref: str, lookup: dict[str, list[str]], q: Question) -> str:
    """One gold reference -> the one paper id it names, or `InputError`."""
    where = q.where or f"{q.item or q.id}"
    for key in reference_keys(ref):
        found = lookup.get(key)
        if found and len(found) == 1:
            return found[0]
        if found:
            raise InputError(f"{where}: gold {ref!r} matches {len(found)} papers ({', '.join(found[:3])})",
                             "give the paper id (as `rag search --json` shows it) instead")
    raise InputError(f"{where}: gold {ref!r} matches no paper in the index",
                     "give a paper id, exact title, arXiv id or DOI of an ingested paper, "
                     "or ingest the paper first (`rag ingest FILE`)")


def title_abstract(settings: Any) -> Dataset:
    """Every paper of the configured index: title -> its paper (easy: chunks carry the title)."""
    from rag.search.retrieval import Retriever

    papers = Retriever(settings).index().papers
    items = [Item(f"t{i:04d}", "title", [Question(f"t{i:04d}", p.title, [p.id], [], "title", "en", f"t{i:04d}")])
             for i, p in enumerate(sorted(papers.values(), key=lambda p: p.id))]
    return Dataset("title-abstract", "generated", items, _fingerprint(items))


def load_dataset(name: str | Path, settings: Any | None = None) -> Dataset:
    """A built-in name (``dev``, ``title-abstract``) or a JSON Lines file (questions or feedback)."""
    key = str(name)
    if key in BUILTIN:
        return read_jsonl(BUILTIN[key], key)
    if key == "title-abstract":
        from rag.settings import Settings

        return title_abstract(settings or Settings())
    return read_jsonl(Path(name))


__all__ = ["Dataset", "Item", "Question", "load_dataset", "read_jsonl", "title_abstract", "parse_record",
           "feedback_item", "resolve_gold", "gold_lookup", "reference_keys"]
