"""Conversations: follow-up condensation, token-bounded memory, stable citation numbers,
and exports (Markdown with numbered references and flagged sentences, BibTeX of the cited papers).

A question is rewritten before retrieval only when it depends on the conversation: it points
back (it, they, this paper...) or is too short to stand alone, *and* it names no paper or method
that retrieval finds on its own. "How many experts does Skywork-MoE have, and which techniques
does it introduce?" names Skywork-MoE, which a paper's title holds verbatim, so it is searched as
it is, pronoun or not. A follow-up is rewritten by the LLM when a capable one answers (it also
puts the query into English), else by a deterministic rule that appends the previous turn's
cited paper titles and its key terms. Citation numbers: a paper cited once keeps its number for
the whole conversation; the others are numbered afresh each turn from the smallest free number.

A table a message asks for ("make a table of test-time adaptation papers") is a turn too
(`Conversation.add_table`, which every chat interface calls where it shows the table; its rows
are numbered as citations are, `rag.table.chat.requested_table`):

- the Markdown export shows it as ``rag table --md`` writes it (notes, overview, table, evidence),
  and its rows' papers are in the references and the BibTeX under their row numbers;
- the model's memory of it (`history`) is compact: the request, then its columns and its rows'
  numbers and titles (`table_memory`), not its cells. A 10 x 5 table in full costs more than the
  whole memory (600 tokens), so it would push out every earlier turn; the titles are what lets a
  follow-up say "the second one" or "[3]", and whatever the follow-up asks is read from those
  papers' abstracts again (checked), not from the table's cells;
- a follow-up's subject: the rows it points at by position or number ("tell me more about the
  second one", "what does [3] report?") are pinned, as an answer's one or two cited papers are;
  any other follow-up ("which of them use a teacher model?") is searched *within* the table's
  papers (a filter, `within_last_table`), not pinned to all of them: the search then ranks the
  rows by the new question, and an answer abstains when none of them says it, where pinning
  ten papers would read them all and cite whichever. "them" in a new table request means the
  rows (`rag.table.chat.last_cited`).

`Conversation.respond` is the one road from an `rag.answer.request.AskRequest` to an answer, which every
interface takes (a single question is a conversation's first turn): it resolves the request's
backend once, condenses, bounds the history and streams the answer. Left out: retrieval and
answering themselves (`rag.answer.answerer`), checking the request (`rag.answer.request`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from rag.answer import prompts
from rag.answer.answer_result import Answer, Citation, Event
from rag.answer.answer_text import one_line_reply
from rag.answer.answerer import Answerer
from rag.answer.claims import content_words
from rag.answer.request import AskRequest, fitted
from rag.errors import BackendError
from rag.index.bibtex import paper_bibtex
from rag.index.corpus import Paper
from rag.llm import Backend, Message, approx_tokens, generates
from rag.render.markdown import conversation_markdown
from rag.search.filters import Filters
from rag.search.ranking import query_names
from rag.table.export import with_notes
from rag.table.maker import Table

_FOLLOW_UP = re.compile(
    r"\b(it|its|they|them|their|this|that|these|those|the paper|the method|the model|the authors|"
    r"same|also|there|he|she|his|her)\b", re.I)
_POINTS_BACK = re.compile(r"\b(it|its|they|them|their|the paper|the method|the model|the authors|this (?:paper|"
                          r"method|model|approach|work))\b", re.I)
_GENERIC_NAME = re.compile(r"^[A-Z]{2,}s$")  # plural acronyms (LLMs, GPUs) name no one paper
_ORDINALS = {w: i for i, w in enumerate(["first", "second", "third", "fourth", "fifth", "sixth", "seventh",
                                         "eighth", "ninth", "tenth"], 1)}
# a table's row by position ("the second one", "the 3rd paper", "the last one") or by number ("[3]", "paper 3")
_ROW_POSITION = re.compile(rf"\b({'|'.join(_ORDINALS)}|\d+(?:st|nd|rd|th)|last)\s+(?:one|paper|row|method|model|"
                           r"work|entry|approach)\b", re.I)
_ROW_NUMBER = re.compile(r"\[(\d+)\]|(?:\b(?:paper|row|number)\s+|#)(\d+)\b", re.I)
TABLE_MEMORY_ROWS = 10  # rows a table turn names in the model's memory; the rest are counted


@dataclass
class Turn:
    question: str
    query: str
    condensed_by: str          # "none" | "rules" | "llm" | "rows" (pinned to a table's rows) | "table" (searched in it)
    answer: Answer             # a table turn's: its rows as citations, its memory as text (`table_memory`)
    table: Table | None = None  # the table a table turn showed (None: an answer, or a table replayed from its text)
    kind: str = "answer"       # "answer" | "table"


def table_memory(labels: Sequence[str], cited: Sequence[Citation]) -> str:
    """What a table turn leaves in the model's memory: its columns, its rows' numbers and titles.

    >>> from types import SimpleNamespace as NS
    >>> table_memory(["Data"], [Citation(2, NS(title="A"), True, 0.0), Citation(1, NS(title="B"), True, 0.0)])
    'A table of 2 papers comparing Data: [2] A; [1] B.'
    """
    rows = [f"[{c.number}] {c.paper.title}" for c in cited[:TABLE_MEMORY_ROWS]]
    more = f"; and {len(cited) - TABLE_MEMORY_ROWS} more" if len(cited) > TABLE_MEMORY_ROWS else ""
    columns = f" comparing {', '.join(labels)}" if labels else ""
    return f"A table of {len(cited)} paper{'s' if len(cited) != 1 else ''}{columns}: {'; '.join(rows)}{more}."


def table_turn(question: str, labels: Sequence[str], cited: Sequence[Citation], table: Table | None = None) -> Turn:
    """The turn of a table asked for by ``question``: its ``labels`` (columns) and numbered rows
    (``cited``); ``table`` itself when this process made it (a replayed one has only its text)."""
    answer = Answer(question=question, query=question, answer=table_memory(labels, cited), citations=list(cited))
    return Turn(question, question, "none", answer, table, "table")


def pointed_rows(question: str, turn: Turn) -> list[str]:
    """The ids of the rows of a table ``turn`` that ``question`` points at by position ("the second
    one", "the last paper") or by number ("[3]", "paper 3"); none when it points at none.

    >>> from types import SimpleNamespace as NS
    >>> rows = [Citation(n, NS(id=pid), True, 0.0) for n, pid in [(3, "a"), (1, "b"), (4, "c")]]
    >>> turn = NS(answer=NS(citations=rows))
    >>> pointed_rows("tell me more about the second one", turn), pointed_rows("What does [3] report?", turn)
    (['b'], ['a'])
    >>> pointed_rows("which of them use a teacher model?", turn), pointed_rows("and the last one?", turn)
    ([], ['c'])
    """
    rows = turn.answer.citations
    picked: list[Citation] = []
    for word in _ROW_POSITION.findall(question):
        word = word.lower()
        position = len(rows) if word == "last" else _ORDINALS.get(word) or int(re.sub(r"\D", "", word))
        picked += rows[position - 1: position] if position >= 1 else []
    for bracketed, named in _ROW_NUMBER.findall(question):
        picked += [c for c in rows if c.number == int(bracketed or named)]
    return list(dict.fromkeys(c.paper.id for c in picked))


def looks_like_follow_up(question: str) -> bool:
    """Pronouns that point back, or too few content words to stand alone."""
    return bool(_FOLLOW_UP.search(question)) or len(content_words(question)) < 3


def rule_condense(question: str, previous: Turn) -> str:
    """Question + the previous turn's cited (else top retrieved) titles + its question's key terms.

    >>> # previous: "Which paper proposes SetFit?" citing "Efficient Few-Shot Learning Without Prompts"
    >>> # "How fast is it to train?" -> "How fast is it to train? Efficient Few-Shot Learning Without Prompts SetFit"
    """
    papers = [c.paper.title for c in previous.answer.citations[:2]] or \
             [r["title"] for r in previous.answer.retrieved[:1]]
    terms = [w for w in re.findall(r"[A-Za-z][\w-]*", previous.question)
             if w.lower() in content_words(previous.question) and w.lower() not in question.lower()]
    return " ".join([question, *papers, *dict.fromkeys(terms)])


def brings_context(query: str, question: str, previous: Turn) -> bool:
    """Whether a rewritten query names something from the previous turn that the question did not:
    a model that echoes the follow-up ("What model do they use?") has resolved nothing, and the
    rule then does better (measured on the dev conversations)."""
    before = content_words(question)
    context = content_words(" ".join([previous.question, previous.answer.answer,
                                      *(c.paper.title for c in previous.answer.citations)]))
    return bool((content_words(query) - before) & context)


class Conversation:
    """One user's conversation. Not shared between users (the web app keeps one per session)."""

    def __init__(self, answerer: Answerer, memory_tokens: int = 600) -> None:
        self.answerer = answerer
        self.memory_tokens = memory_tokens
        self.turns: list[Turn] = []
        self.numbers: dict[str, int] = {}  # cited paper id -> citation number, stable for the conversation

    def reset(self) -> None:
        self.turns.clear()
        self.numbers.clear()

    # ---------------------------------------------------------- condensation

    def names_its_subject(self, question: str, filters: Filters | None = None) -> bool:
        """The question names a paper or method that retrieval finds verbatim in one or two of its
        top papers (a title, or an abstract) within the request's ``filters``: it stands on its own.
        A question that points back with a pronoun ("What does it get on MATH?") names its subject
        only by a title: a name found in abstracts alone is what it asks about (a benchmark, a
        dataset), not whom."""
        names = [n for n in query_names(question) if not _GENERIC_NAME.match(n)]
        if not names:
            return False
        pointing = bool(_POINTS_BACK.search(question))
        hits = self.answerer.retriever.search(question, k=5, filters=filters).hits
        for name in names:
            pattern = re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")
            holders = [h for h in hits
                       if pattern.search(h.paper.title if pointing else f"{h.paper.title} {h.paper.abstract}")]
            if 1 <= len(holders) <= 2:
                return True
        return False

    def condense(self, question: str, llm: Backend, filters: Filters | None = None) -> tuple[str, str]:
        """(standalone query, how): ``none`` for a first or self-contained question; ``llm`` rewrites
        a follow-up when it is capable. After a table: ``rows`` for a question pointing at some of its
        rows (their titles appended), ``table`` for any other follow-up (searched as it is, within
        the table's papers: `within_last_table`)."""
        if not self.turns:
            return question, "none"
        previous = self.turns[-1]
        if previous.kind == "table" and (rows := pointed_rows(question, previous)):
            titles = [c.paper.title for c in previous.answer.citations if c.paper.id in rows]
            return " ".join([question, *titles]), "rows"
        if not looks_like_follow_up(question) or self.names_its_subject(question, filters):
            return question, "none"
        if previous.kind == "table":
            return question, "table"
        if llm.capable:
            query = self._llm_condense(question, llm)
            if query and brings_context(query, question, previous):
                return query, "llm"
        return rule_condense(question, previous), "rules"

    def _llm_condense(self, question: str, llm: Backend) -> str | None:
        history = "\n".join(f"User: {t.question}\nAssistant: {t.answer.answer[:400]}" for t in self.turns[-2:])
        prompt = prompts.CONDENSE_PROMPT.format(history=history, question=question)
        try:
            text = "".join(llm.stream(prompts.side_task(prompt), max_tokens=60, temperature=0.0))
        except BackendError:
            return None
        return one_line_reply(text)

    # ---------------------------------------------------------- memory

    def history(self) -> list[Message]:
        """Earlier turns as chat messages, newest kept first, within ``memory_tokens`` (a table turn as
        its request and `table_memory`)."""
        kept: list[Message] = []
        budget = self.memory_tokens
        for turn in reversed(self.turns):
            pair = [Message("user", turn.question), Message("assistant", turn.answer.answer)]
            cost = sum(approx_tokens(m.content) for m in pair)
            if cost > budget:
                break
            kept = pair + kept
            budget -= cost
        return kept

    # ---------------------------------------------------------- asking

    def subject(self, question: str = "") -> list[str]:
        """The papers the conversation is about: the last turn's cited papers, when it cited one or two
        (a list answer names no single subject); after a table, the rows ``question`` points at
        (`pointed_rows`)."""
        if not self.turns:
            return []
        if self.turns[-1].kind == "table":
            return pointed_rows(question, self.turns[-1])
        cited = [c.paper.id for c in self.turns[-1].answer.citations]
        return cited if 1 <= len(cited) <= 2 else []

    def within_last_table(self, filters: Filters | None) -> Filters:
        """``filters`` narrowed to the last table's papers: where a follow-up to a table is searched."""
        rows = frozenset(c.paper.id for c in self.turns[-1].answer.citations)
        filters = filters or Filters()
        return replace(filters, paper_ids=rows if filters.paper_ids is None else rows & filters.paper_ids)

    def add(self, turn: Turn) -> None:
        """Append ``turn``, its cited papers keeping their numbers for the rest of the conversation."""
        self.turns.append(turn)
        self.numbers.update({c.paper.id: c.number for c in turn.answer.citations})

    def add_table(self, question: str, table: Table) -> Turn:
        """Record ``table``, shown for the message ``question``, as a turn (the module's docstring says
        what that means for the export, the memory and a follow-up). Its rows must be numbered in
        this conversation (`rag.table.chat.requested_table` given ``numbers``): a row numbered as
        another paper's citation is a `ValueError`."""
        taken = {n: pid for pid, n in self.numbers.items()}
        for row in table.rows:
            if self.numbers.get(row.paper.id, row.number) != row.number or \
                    taken.get(row.number, row.paper.id) != row.paper.id:
                raise ValueError(f"row {row.number} ({row.paper.id}) is not numbered as this conversation numbers "
                                 "its papers: make the table with the conversation's numbers")
        turn = table_turn(question, [c.label for c in table.columns],
                          [Citation(r.number, r.paper, True, 0.0) for r in table.rows], table)
        self.add(turn)
        return turn

    def respond(self, request: AskRequest, answerer: Answerer | None = None) -> Iterator[Event]:
        """Answer ``request`` in this conversation: a follow-up is condensed with the earlier turns and
        keeps their subject (`subject`) in its retrieval and prompt, unless it names its own.

        ``answerer``: the one serving the request's model (an `rag.answer.request.AskRequest.settings`
        answerer, or a pool's), for this turn only; default the conversation's own. The backend is
        resolved once, here (the answerer keeps the configured one it resolved)."""
        answerer = fitted(answerer or self.answerer, request)
        if request.model and request.model != answerer.settings.llm.model:
            raise ValueError(f"the answerer serves {answerer.settings.llm.model!r}, not the request's model")
        llm, _ = answerer.backend_for(request.backend)
        question = request.question
        query, how = self.condense(question, llm, request.filters)
        history = self.history() if generates(llm) else []
        pinned = self.subject(question) if how != "none" else []
        kwargs = request.stream_kwargs()
        if how == "table":
            kwargs["filters"] = self.within_last_table(request.filters)
        for event in answerer.stream(question, query=query if how != "none" else None, backend=request.backend,
                                     history=history, numbers=self.numbers, pinned=pinned, **kwargs):
            if event.kind == "done" and event.answer is not None:
                self.add(Turn(event.answer.question, query, how, event.answer))
            yield event

    def stream(self, question: str, **fields: Any) -> Iterator[Event]:
        """`respond` to ``question`` with the `AskRequest` ``fields`` (``k``, ``filters``, ``backend``...),
        checked against the answerer's settings: the library's way in (evaluation, tests)."""
        yield from self.respond(AskRequest.of(self.answerer.settings, question, **fields))

    def ask(self, question: str, **fields: Any) -> Answer:
        answer = None
        for event in self.stream(question, **fields):
            answer = event.answer or answer
        assert answer is not None
        return answer

    # ---------------------------------------------------------- exports

    def cited_papers(self) -> list[tuple[int, Paper]]:
        seen: dict[int, Paper] = {}
        for turn in self.turns:
            for c in turn.answer.citations:
                seen.setdefault(c.number, c.paper)
        return sorted(seen.items())

    def to_markdown(self) -> str:
        """The conversation as Markdown (`rag.render.markdown.conversation_markdown`), a table turn as
        `rag.table.export.with_notes` writes its table."""
        return conversation_markdown([(t.question, with_notes(t.table) if t.table is not None else
                                       t.answer.answer if t.kind == "table" else t.answer) for t in self.turns],
                                     self.cited_papers())

    def to_bibtex(self) -> str:
        return "\n".join(paper_bibtex(p) for _, p in self.cited_papers())


__all__ = ["TABLE_MEMORY_ROWS", "Conversation", "Turn", "looks_like_follow_up", "paper_bibtex", "pointed_rows",
           "rule_condense", "table_memory", "table_turn"]
