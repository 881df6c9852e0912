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

`Conversation.respond` is the one road from an `rag.request.AskRequest` to an answer, which every
interface takes (a single question is a conversation's first turn): it resolves the request's
backend once, condenses, bounds the history and streams the answer. Left out: retrieval and
answering themselves (`rag.answer`), checking the request (`rag.request`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rag import prompts
from rag.answer import Answerer
from rag.answer_result import Answer, Event, marked_answer
from rag.answer_text import one_line_reply
from rag.bibtex import paper_bibtex
from rag.claims import content_words
from rag.corpus import Paper
from rag.errors import BackendError
from rag.filters import Filters
from rag.llm import Backend, Message, approx_tokens, generates
from rag.markup import md_prose, md_text, md_url
from rag.ranking import query_names
from rag.request import AskRequest, fitted

_FOLLOW_UP = re.compile(
    r"\b(it|its|they|them|their|this|that|these|those|the paper|the method|the model|the authors|"
    r"same|also|there|he|she|his|her)\b", re.I)
_POINTS_BACK = re.compile(r"\b(it|its|they|them|their|the paper|the method|the model|the authors|this (?:paper|"
                          r"method|model|approach|work))\b", re.I)
_GENERIC_NAME = re.compile(r"^[A-Z]{2,}s$")  # plural acronyms (LLMs, GPUs) name no one paper


@dataclass
class Turn:
    question: str
    query: str
    condensed_by: str          # "none" | "rules" | "llm"
    answer: Answer


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
        a follow-up when it is capable."""
        if not self.turns or not looks_like_follow_up(question) or self.names_its_subject(question, filters):
            return question, "none"
        previous = self.turns[-1]
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
        """Earlier turns as chat messages, newest kept first, within ``memory_tokens``."""
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

    def subject(self) -> list[str]:
        """The papers the conversation is about: the last turn's cited papers, when it cited one or two
        (a list answer names no single subject)."""
        cited = [c.paper.id for c in self.turns[-1].answer.citations] if self.turns else []
        return cited if 1 <= len(cited) <= 2 else []

    def respond(self, request: AskRequest, answerer: Answerer | None = None) -> Iterator[Event]:
        """Answer ``request`` in this conversation: a follow-up is condensed with the earlier turns and
        keeps their subject (`subject`) in its retrieval and prompt, unless it names its own.

        ``answerer``: the one serving the request's model (an `rag.request.AskRequest.settings`
        answerer, or a pool's), for this turn only; default the conversation's own. The backend is
        resolved once, here (the answerer keeps the configured one it resolved)."""
        answerer = fitted(answerer or self.answerer, request)
        if request.model and request.model != answerer.settings.llm.model:
            raise ValueError(f"the answerer serves {answerer.settings.llm.model!r}, not the request's model")
        llm, _ = answerer.backend_for(request.backend)
        question = request.question
        query, how = self.condense(question, llm, request.filters)
        history = self.history() if generates(llm) else []
        pinned = self.subject() if how != "none" else []
        for event in answerer.stream(question, query=query if how != "none" else None, backend=request.backend,
                                     history=history, numbers=self.numbers, pinned=pinned, **request.stream_kwargs()):
            if event.kind == "done" and event.answer is not None:
                self.turns.append(Turn(event.answer.question, query, how, event.answer))
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
        """The conversation as Markdown: unsupported and uncited sentences marked as in the web chat;
        every user-controlled string escaped (`rag.markup`: a title or DOI never becomes an image)."""
        lines = ["# Conversation", ""]
        for turn in self.turns:
            lines += [f"**Q:** {md_text(turn.question)}", "", md_prose(marked_answer(turn.answer, "markdown")), ""]
            if turn.answer.unsupported:
                lines += [f"> {len(turn.answer.unsupported)} of {len(turn.answer.sentences)} sentences are not "
                          "supported by the abstracts they cite (marked).", ""]
        papers = self.cited_papers()
        if papers:
            lines += ["## References", ""]
            for number, paper in papers:
                link = (md_url(paper.links[0]) or "") if paper.links else ""
                year = f" ({paper.year})" if paper.year else ""
                lines.append(f"[{number}] {md_text(paper.title)}{year}. {md_text(', '.join(paper.authors))} "
                             f"{link}".rstrip())
        return "\n".join(lines) + "\n"

    def to_bibtex(self) -> str:
        return "\n".join(paper_bibtex(p) for _, p in self.cited_papers())


__all__ = ["Conversation", "Turn", "looks_like_follow_up", "paper_bibtex", "rule_condense"]
