"""One request for an answer, whatever interface asked: `AskRequest`.

``rag ask`` and ``rag chat``, the web chat, the API's chat completions and the MCP ``ask`` tool
each turn what they were given (flags, the settings panel, a JSON body, tool arguments) into an
`AskRequest` with `AskRequest.of`, which checks it once against the `Settings` in force: the
limits and defaults come from there (``retrieval.max_k``; the bounds of ``llm.temperature``,
``retrieval.dense_weight`` and ``answer.verify``), the question is cleaned
(`rag.answer.answer_text.clean_question`) and the filters parsed (`parse_filters`) here and nowhere else. A
bad value is a `rag.errors` error carrying its fix and its ``param`` (the interface's own name
for the field: ``--year``, ``messages.0.content``), so every interface reports it through the one
table (`rag.errors.outcome`). The request then takes one road: `rag.chat.Conversation.respond`.

`with_settings` is the one place a request's overrides (backend, model, answer length, verify
mode) become `Settings`; `fitted` gives an answerer those of them that keep its backend.

Left out: which model names a remote client may pick (`ui.shared.AnswererPool.check`), and each
interface's own framing (OpenAI messages and their roles, the panel's clamping of slider values).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag.answer.answer_text import clean_question
from rag.answer.answerer import MAX_QUESTION_CHARS, Answerer
from rag.errors import InputError, TooLargeError
from rag.index.corpus import clean_text
from rag.llm import LLMCommon, Message, backend_names, unknown_backend
from rag.search.filters import Filters
from rag.search.retrieval import visible
from rag.settings import RetrievalSettings, Settings, Verify

YEAR_FIX = "give one year (2023), a range (2020..2024) or an open range (2020.. or ..2020)"


def _bounds(group: type[BaseModel], field: str) -> dict[str, Any]:
    """The bounds (``ge``, ``le`` ...) a settings field declares: a request's limits are the setting's.

    >>> _bounds(RetrievalSettings, "dense_weight")
    {'ge': 0.0, 'le': 1.0}
    """
    return {key: getattr(rule, key) for rule in group.model_fields[field].metadata
            for key in ("gt", "ge", "lt", "le") if hasattr(rule, key)}


def check_k(settings: Settings, k: int | None, param: str = "k") -> int | None:
    """``k`` when it is within 1..``retrieval.max_k`` (None: the default); else an `InputError`.

    >>> check_k(Settings(), 0)
    Traceback (most recent call last):
    ...
    rag.errors.InputError: k=0 is out of range (1 to 100 papers)
    """
    top = settings.retrieval.max_k
    if k is not None and not 1 <= k <= top:
        raise InputError(f"{param}={k} is out of range (1 to {top} papers)",
                         f"ask for 1 to {top} papers (RAG_RETRIEVAL__MAX_K)", param=param)
    return k


def parse_filters(year: str | int | None = None, author: str | None = None, category: str | None = None,
                  paper_ids: frozenset[str] | None = None, param: str = "year") -> Filters | None:
    """The search filters from what an interface was given (None when there are none); a year that is
    not one, or a range that runs backwards, is an `InputError` about ``param``.

    >>> parse_filters("2020..2024", "Lovelace")
    Filters(year_from=2020, year_to=2024, author='Lovelace', category=None, paper_ids=None)
    >>> parse_filters(None, "", None) is None
    True
    """
    year = str(year).strip() if year is not None else ""
    author, category = (author or "").strip() or None, (category or "").strip() or None
    if not year and not author and not category and paper_ids is None:
        return None
    try:
        lo, hi = Filters.parse_years(year) if year else (None, None)
    except ValueError:
        raise InputError(f"{param} {year!r} is not a year or a range of years", YEAR_FIX, param=param) from None
    try:
        return Filters(lo, hi, author, category, paper_ids)
    except InputError as err:  # a reversed range
        err.param = param
        raise


def with_settings(settings: Settings, backend: str | None = None, model: str | None = None,
                  max_tokens: int | None = None, verify: Verify | None = None) -> Settings:
    """``settings`` with a request's overrides: the backend and model, an answer-length bound (it only
    lowers ``llm.max_new_tokens``: the prompt budget assumes that bound) and the verify mode."""
    llm: dict[str, Any] = {}
    if backend:
        llm["backend"] = backend
    if model:
        llm["model"] = model
    if max_tokens is not None and max_tokens < settings.llm.max_new_tokens:
        llm["max_new_tokens"] = max_tokens
    update: dict[str, Any] = {"llm": settings.llm.model_copy(update=llm)} if llm else {}
    if verify is not None and verify != settings.answer.verify:
        update["answer"] = settings.answer.model_copy(update={"verify": verify})
    return settings.model_copy(update=update) if update else settings


class AskRequest(BaseModel):
    """A question to answer and how: what every interface builds (`of`) and `Conversation.respond` takes.

    ``history``: earlier messages of a conversation the caller keeps itself (the API, MCP); an
    interface that holds a `rag.chat.Conversation` (``rag chat``, the web chat) leaves it empty.
    ``backend``/``model``: None keeps the configured one. ``k``: papers retrieved (None: the answer
    step's own default, ``answer.max_context_papers``, or ``answer.list_papers`` for a list).
    ``max_tokens`` only lowers the configured answer length; ``verify`` overrides ``answer.verify``."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    question: str
    history: tuple[Message, ...] = ()
    k: int | None = Field(None, ge=1)
    filters: Filters | None = None
    backend: str | None = None
    model: str | None = None
    temperature: float | None = Field(None, **_bounds(LLMCommon, "temperature"))
    dense_weight: float | None = Field(None, **_bounds(RetrievalSettings, "dense_weight"))
    max_tokens: int | None = Field(None, ge=1)
    verify: Verify | None = None

    @classmethod
    def of(cls, settings: Settings, question: str, *, year: str | int | None = None, author: str | None = None,
           category: str | None = None, params: Mapping[str, str] | None = None, **fields: Any) -> AskRequest:
        """The request checked against ``settings``, or the `rag.errors` error of its first bad field.

        ``params`` renames fields in errors to the interface's names (``{"question":
        "messages.2.content"}``); ``year``/``author``/``category`` become ``filters`` (`parse_filters`);
        ``fields`` are the model's other fields."""
        names = dict(params or {})

        def name(field: str) -> str:
            return names.get(field, field)

        fields["question"] = cls._question(question, name("question"))
        fields.update({key: None for key in ("backend", "model") if key in fields and not fields[key]})
        check_k(settings, fields.get("k"), name("k"))
        if (backend := fields.get("backend")) and (problem := unknown_backend(backend)):
            raise InputError(problem, f"use one of {', '.join(backend_names())}", param=name("backend"))
        if fields.get("filters") is None:
            fields["filters"] = parse_filters(year, author, category, param=name("year"))
        if "history" in fields:
            fields["history"] = tuple(fields["history"])
        try:
            return cls(**fields)
        except ValidationError as err:
            first = err.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else ""
            raise InputError(f"{name(field)}: {first['msg']}",
                             _FIXES.get(field, "see rag/answer/request.py for the field"),
                             param=name(field) or None) from None

    @staticmethod
    def _question(text: str, param: str) -> str:
        """The question cleaned (`rag.answer.answer_text.clean_question`), once; empty is an `InputError`, too long
        a `TooLargeError` (413 from the API)."""
        try:
            return clean_question(text)
        except InputError as err:
            long = visible(cleaned := clean_text(text)) and len(cleaned) > MAX_QUESTION_CHARS
            raise (TooLargeError if long else InputError)(str(err), err.fix, param=param) from None

    def settings(self, base: Settings) -> Settings:
        """``base`` with this request's overrides (`with_settings`): what a caller building its own
        `Answerer` for the request configures it with (``rag ask``)."""
        return with_settings(base, self.backend, self.model, self.max_tokens, self.verify)

    def stream_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `rag.answer.answerer.Answerer.stream` this request sets."""
        return {"k": self.k, "filters": self.filters, "temperature": self.temperature,
                "dense_weight": self.dense_weight}


def _span(group: type[BaseModel], field: str) -> str:
    bounds = _bounds(group, field)
    return f"from {bounds.get('ge', bounds.get('gt'))} to {bounds.get('le', bounds.get('lt'))}"


_FIXES = {
    "temperature": f"give a temperature {_span(LLMCommon, 'temperature')} (0: the same answer each time)",
    "dense_weight": f"give a weight {_span(RetrievalSettings, 'dense_weight')} (0: keywords only, 1: meaning only)",
    "max_tokens": "give a positive number of tokens",
    "verify": f"use one of {', '.join(get_args(Verify))}",
}


def fitted(answerer: Answerer, request: AskRequest) -> Answerer:
    """``answerer`` with the request's answer-length bound and verify mode in force: itself when the
    request changes neither, else a shallow copy sharing its models, caches and resolved backend
    (neither override changes which backend answers)."""
    settings = with_settings(answerer.settings, max_tokens=request.max_tokens, verify=request.verify)
    if settings is answerer.settings:
        return answerer
    clone = copy.copy(answerer)
    clone.settings = settings
    return clone


__all__ = ["AskRequest", "check_k", "fitted", "parse_filters", "with_settings"]
