"""What the OpenAI-compatible API (`ui.api`) and the MCP server (`ui.mcp_server`) share: one
`PaperService` over the library, returning plain dicts so both interfaces show the same fields.

- papers: lookup by id, exact title, arXiv id or DOI (`rag.library.resolve_paper`), BibTeX
  (`rag.index.bibtex.paper_bibtex`);
- search: `Retriever.search` -> the items of ``rag search --json``;
- answers: a request's messages and options become a `rag.answer.request.AskRequest` (`PaperService.request`:
  the one request every interface builds, checked against the settings), its history a
  `rag.chat.Conversation` whose earlier turns are *replayed* without calling any model (question
  and answer text as written by the client), so the follow-up is condensed, the history bounded
  and the citation numbers kept exactly as in ``rag chat``. A client sends back no citations,
  only text: the Markdown source list the interfaces append to answers (``- [n] [Title](url) ·
  `paper-id```, `rag.render.markdown.sources_markdown`) is read back to restore the earlier turn's
  cited papers and their numbers;
  without it, the rule condensation falls back to the earlier question's key terms;
- model names: ``paper-rag`` = the configured backend and model; a backend name (``extractive``,
  ``ollama`` ...); a bundled model name; ``BACKEND/MODEL``; any other name is a model the
  configured Ollama / OpenAI-compatible server lists (`ui.shared.AnswererPool.check`, as the web
  chat does). Anything else, a path above all, is refused (`UnknownModelError`) without echoing
  the name (a remote client must not make the server load, or probe, its files);
- a concurrency bound (`Slots`, ``settings.ui.concurrency`` as in the web chat): a full bound
  is refused at once (`BusyError`), as OpenAI's rate limits are; clients retry.

- similar papers: `rag.library.similar_papers` (stored vectors, nothing re-embedded).
- tables: `rag.table.maker.TableMaker.make` with the default answerer's backend and checks, the
  object ``rag table --json`` prints; it holds an answer slot while its cells are extracted.

Left out: HTTP and MCP framing, authentication (the interfaces), how an answer is shown
(`rag.render.markdown` for its text, `rag.render.json` for its object), removing papers (the CLI and the
web chat's corpus panel only: an API client cannot change the library).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rag import models
from rag.answer.answer_result import Answer, Citation, Event
from rag.answer.answerer import MAX_QUESTION_CHARS, Answerer
from rag.answer.request import AskRequest, check_k, parse_filters
from rag.chat import Conversation, Turn, paper_bibtex, table_turn
from rag.errors import BusyError, InputError, PaperNotFoundError, RagError, TooLargeError, UnknownModelError, outcome
from rag.index.corpus import Paper, clean_text
from rag.llm import Message, backend_names
from rag.render.markdown import split_sources
from rag.settings import Settings
from rag.table.export import column_labels
from rag.table.maker import Table
from ui.shared import UNKNOWN_MODEL_FIX, AnswererPool

DEFAULT_MODEL = "paper-rag"
ROLES = ("system", "developer", "user", "assistant")


class AnswerStream:
    """An answer's events holding one answer slot, given back exactly once: at the end, on an
    error, on `close`, or on `cancel` (a client that went away, even before the first event).

    `cancel` may come from any thread while another one is inside ``next`` (waiting for the model's
    next token, or for its prompt to be read): the slot is given back at once, and the generation
    stops at its next event, which is dropped."""

    def __init__(self, events: Iterator[Event], release: Callable[[], None]) -> None:
        self._events, self._release = events, release
        self._guard = threading.Lock()
        self._held, self._open, self._cancelled = True, True, False

    def __iter__(self) -> AnswerStream:
        return self

    def __next__(self) -> Event:
        if self._cancelled:
            self.close()
            raise StopIteration
        try:
            event = next(self._events)
        except BaseException:  # StopIteration included
            self.close()
            raise
        if self._cancelled:  # the client left while this event was being made
            self.close()
            raise StopIteration
        return event

    def _give_back(self) -> None:
        with self._guard:
            held, self._held = self._held, False
        if held:
            self._release()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """From any thread: the slot back now, the generation stopped at its next event."""
        self._cancelled = True
        self._give_back()

    def close(self) -> None:
        self._cancelled = True
        with self._guard:
            was_open, self._open = self._open, False
        if not was_open:
            return
        try:
            self._events.close()  # type: ignore[attr-defined]
        except ValueError:  # running in another thread right now: it stops at its next event (cancelled)
            pass
        finally:
            self._give_back()

    def __del__(self) -> None:
        self.close()


class Slots:
    """At most ``size`` answers at once; `take` refuses instead of queueing.

    >>> slots = Slots(1); slots.take(); slots.take()
    Traceback (most recent call last):
    ...
    rag.errors.BusyError: 1 answer is already being generated (the limit)
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = threading.BoundedSemaphore(size)

    def take(self) -> None:
        if not self._free.acquire(blocking=False):
            raise BusyError(f"{self.size} answer{'s are' if self.size != 1 else ' is'} already being generated "
                            "(the limit)")

    def give(self) -> None:
        self._free.release()


ChatMessage = Message  # one message of an OpenAI-style exchange: role, content


# ------------------------------------------------------------------ rendering


def error_object(err: RagError) -> dict[str, Any]:
    """OpenAI's error object for ``err`` (`rag.errors.outcome` gives its type and code): the API's error
    body, and an MCP tool error's structured content. The message ends in the fix."""
    row = outcome(err)
    message = f"{err} (fix: {err.fix})" if err.fix else str(err)
    return {"message": message, "type": row.type, "param": err.param, "code": row.code}


# ------------------------------------------------------------------ the service


class PaperService:
    """Papers, search and answers over one index, safe to call from several threads."""

    def __init__(self, settings: Settings, pool: AnswererPool | None = None, embedder: Any | None = None,
                 backend: Any | None = None) -> None:
        self.settings = settings
        self.pool = pool or AnswererPool(settings, embedder=embedder, backend=backend)
        self.slots = Slots(settings.ui.concurrency)

    # ---------------------------------------------------------- papers and search

    def paper(self, paper_id: str) -> Paper:
        """The paper an id, exact title, arXiv id or DOI names (`rag.library.resolve_paper`); 404 if none."""
        from rag.library import resolve_paper

        try:
            return resolve_paper(self.pool.retriever.index().papers, paper_id)
        except PaperNotFoundError as err:  # the same error, with a fix that names no CLI command
            raise PaperNotFoundError(str(err), "use an id from a search result (paper_id), e.g. arxiv:2406.06563, "
                                               "or the paper's exact title, arXiv id or DOI") from None

    @staticmethod
    def paper_dict(paper: Paper) -> dict[str, Any]:
        data = {k: v for k, v in paper.to_dict().items() if k != "source"}
        return {**data, "links": paper.links, "url": paper.links[0] if paper.links else None}

    def bibtex(self, paper_ids: Sequence[str]) -> str:
        return "\n".join(paper_bibtex(self.paper(pid)) for pid in paper_ids)

    def search(self, query: str, k: int | None = None, year: str | int | None = None, author: str | None = None,
               category: str | None = None) -> dict[str, Any]:
        """``{"query", "results": [rag search --json items], "notices", "empty_because"}``; ``k`` None:
        ``retrieval.k``."""
        check_k(self.settings, k)
        result = self.pool.retriever.search(query, k=k, filters=parse_filters(year, author, category))
        return {"query": result.query, "results": [h.as_dict() for h in result.hits], "notices": result.notices,
                "empty_because": result.empty_because}

    def similar(self, paper_id: str, k: int | None = None, year: str | int | None = None, author: str | None = None,
                category: str | None = None) -> dict[str, Any]:
        """``{"paper_id", "title", "results": [rag similar --json items], "empty_because"}``: nearest papers
        by stored vectors (`rag.library.similar_papers`), the paper itself excluded."""
        from rag.library import similar_papers

        check_k(self.settings, k)
        paper = self.paper(paper_id)  # an unknown id is a PaperNotFoundError (404), as for GET /v1/papers/{id}
        return similar_papers(self.pool.retriever, paper.id, k or 5, parse_filters(year, author, category)).as_dict()

    # ---------------------------------------------------------- tables

    def table(self, query: str | None = None, papers: Sequence[str] = (), columns: Sequence[str] | str | None = None,
              questions: Sequence[str] = (), k: int | None = None, year: str | int | None = None,
              author: str | None = None, category: str | None = None, overview: str = "cells") -> Table:
        """The table ``rag table`` makes (its ``as_dict()`` is what ``rag table --json`` prints)."""
        from rag.table.columns import parse_columns
        from rag.table.maker import MAX_ROWS, OVERVIEWS, TableMaker

        chosen = parse_columns(columns, list(questions))
        if k is not None and not 1 <= k <= MAX_ROWS:
            raise InputError(f"k={k} is out of range", f"ask for 1 to {MAX_ROWS} papers", param="k")
        if overview not in OVERVIEWS:
            raise InputError(f"overview={overview!r}", f"use one of {', '.join(OVERVIEWS)}", param="overview")
        ids = [self.paper(pid).id for pid in papers]  # an unknown id is a PaperNotFoundError (404)
        if not (query or "").strip() and not ids:
            raise InputError("no papers to compare", "give a query, or paper ids in papers", param="query")
        filters = parse_filters(year, author, category)
        self.slots.take()
        try:
            table = TableMaker(self.pool.default).make(query, ids, chosen, k, filters, overview=overview)
        finally:
            self.slots.give()
        return table

    # ---------------------------------------------------------- models

    def models(self) -> list[str]:
        configured = self.settings.llm.model
        names = [DEFAULT_MODEL, *backend_names(), *models.BUNDLED]
        return list(dict.fromkeys([*names, *([configured] if configured else [])]))

    def resolve(self, model: str | None) -> tuple[str | None, str | None]:
        """(backend, model) an API model name stands for, each None for the configured one: what an
        `AskRequest` carries. A name this server does not offer is an `UnknownModelError` (404)."""
        name = (model or DEFAULT_MODEL).strip()
        if name == DEFAULT_MODEL:
            return None, None
        backends = backend_names()  # plug-ins' included
        if name in backends:
            return name, None
        head, _, tail = name.partition("/")
        backend, wanted = (head, tail) if head in backends and tail else (None, name)
        if backend == "extractive":
            return "extractive", None
        self.pool.check(wanted, backend, f"use one of {', '.join(self.models())}; or {UNKNOWN_MODEL_FIX}")
        if backend is None:
            configured = self.settings.llm.backend
            backend = "llamacpp" if models.is_local_model(wanted) else \
                (configured if configured in ("ollama", "openai") else "ollama")
        return backend, (None if wanted == self.settings.llm.model else wanted)

    def check_backend(self, answerer: Answerer, backend: str | None) -> None:
        """Resolve (and so check) the backend now, so a missing model fails before a response starts."""
        from rag.llm import ModelNotFoundError

        try:
            answerer.backend_for(backend)
        except ModelNotFoundError as err:
            fix = err.fix or "GET /v1/models lists the names to use"
            raise UnknownModelError(str(err), fix, param="model") from err

    # ---------------------------------------------------------- answers

    def request(self, messages: Sequence[ChatMessage], model: str | None = None, *, question_param: str | None = None,
                **fields: Any) -> AskRequest:
        """The `AskRequest` of an OpenAI-style exchange: the last message (the user's) is the question,
        the earlier ones its history; ``model`` an API model name (`resolve`); ``fields`` the other
        request fields (``k``, ``temperature``, ``max_tokens``). Errors name the message at fault
        (``messages.2.content``, or ``question_param``): a wrong role is an `InputError`, a long
        question a `TooLargeError`."""
        if not messages:
            raise InputError("messages is empty", "send at least one message with role 'user'", param="messages")
        last = len(messages) - 1
        for i, m in enumerate(messages):
            if m.role not in ROLES:
                raise InputError(f"messages[{i}].role is {m.role!r}",
                                 f"use one of {', '.join(ROLES)} (tools are not supported)", param=f"messages.{i}.role")
            if m.role == "user" and i < last and len(clean_text(m.content)) > MAX_QUESTION_CHARS:
                raise TooLargeError(f"messages[{i}] is {len(m.content):,} characters long "
                                    f"(limit {MAX_QUESTION_CHARS:,} per question)",
                                    "ask a shorter question; put long text in a corpus file instead",
                                    param=f"messages.{i}.content")
        if messages[-1].role != "user":
            raise InputError(f"the last message has role {messages[-1].role!r}",
                             "end the conversation with the user's question", param="messages")
        backend, wanted = self.resolve(model)
        return AskRequest.of(self.settings, messages[-1].content, history=messages[:-1], backend=backend, model=wanted,
                             params={"question": question_param or f"messages.{last}.content"}, **fields)

    def replay(self, answerer: Answerer, history: Sequence[Message]) -> Conversation:
        """A `Conversation` holding the earlier (user, assistant) pairs as turns, without any model call.

        System messages are ignored (paper-rag's own prompt governs answers); a user message with no
        reply after it is dropped. Cited papers and their numbers come back from the source lists. A
        reply holding a table as the chat completions write one (`rag.table.export.column_labels`
        finds its header) is a table turn, its rows the papers of its source list
        (`rag.chat.table_turn`): "them" and a follow-up's subject after it work as in ``rag chat``."""
        conversation = Conversation(answerer)
        papers = answerer.retriever.index().papers
        question: str | None = None
        for m in history:
            if m.role == "user":
                question = clean_text(m.content) or None
            elif m.role == "assistant" and question is not None:
                text, pairs = split_sources(m.content)
                cited = [Citation(n, papers[pid], True, 0.0) for n, pid in pairs if pid in papers]
                labels = column_labels(text)
                conversation.add(table_turn(question, labels, cited) if labels is not None else
                                 Turn(question, question, "none",
                                      Answer(question=question, query=question, answer=text, citations=cited)))
                question = None
        return conversation

    def stream(self, request: AskRequest) -> AnswerStream:
        """Check everything that can fail before an answer starts (the request's model and backend),
        take a slot, then return its events (`rag.chat.Conversation.respond`, the road every interface
        takes). The slot is given back when the events end or are closed."""
        conversation = self.conversation(request)
        self.slots.take()
        return AnswerStream(conversation.respond(request), self.slots.give)

    def conversation(self, request: AskRequest) -> Conversation:
        """The conversation ``request`` continues: its history replayed (`replay`) on the answerer of
        its model and backend, checked to be reachable (`check_backend`)."""
        answerer = self.pool.get(request.model, request.backend)
        self.check_backend(answerer, request.backend)
        return self.replay(answerer, request.history)

    def ask(self, request: AskRequest) -> Answer:
        answer = None
        for event in self.stream(request):
            answer = event.answer or answer
        assert answer is not None
        return answer


__all__ = ["AnswerStream", "ChatMessage", "PaperService", "Slots", "error_object"]
