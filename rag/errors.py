"""The paper-rag error tree, and how every interface reports each error (`outcome`).

``RagError`` is what user-facing layers (CLI, web chat, API, MCP) catch and show as one line:
``str(err)`` is the problem, ``err.fix`` the action that resolves it, ``err.param`` the request
field it is about (the API's OpenAI ``param``), if any. `OUTCOMES` is the one table from an
error class to the CLI's exit status, the API's HTTP status and OpenAI error type and code, and
the MCP server's JSON-RPC error code: every interface reads it through `outcome`, none keeps its
own. Programming errors are not wrapped here; they stay ordinary exceptions (the interfaces
report them as internal errors: exit 3, HTTP 500, a tool crash).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


def nearest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to a mistyped ``name`` (difflib), if any is close enough: the one
    source of every "did you mean" in an error.

    >>> nearest("backnd", ["backend", "model", "seed"])
    'backend'
    >>> nearest("colour", ["backend", "model"]) is None
    True
    """
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


class RagError(Exception):
    """Base of all errors a user can act on."""

    fix: str = ""
    param: str | None = None

    def __init__(self, message: str, fix: str | None = None, *, param: str | None = None) -> None:
        super().__init__(message)
        if fix is not None:
            self.fix = fix
        if param is not None:
            self.param = param

    def user_message(self) -> str:
        return f"{self}\n  fix: {self.fix}" if self.fix else str(self)


class InputError(RagError):
    """A file, record, question or option the user gave cannot be used."""


class NotFoundError(InputError):
    """Something the user named (a paper, a model) does not exist."""


class UnknownModelError(NotFoundError):
    """A model name this server does not offer (the API's ``model``); the name is not echoed back."""


class TooLargeError(InputError):
    """A request or a question over its size limit."""


class BusyError(RagError):
    """Every answer slot is taken (``RAG_UI__CONCURRENCY``): refused at once, as OpenAI's rate limits are."""

    fix = "retry in a moment (RAG_UI__CONCURRENCY bounds the answers generated at once)"


class CorpusError(InputError):
    """A corpus file cannot be read at all (missing, not UTF-8, unknown format, empty)."""


class RecordError(InputError):
    """One record in a corpus file is malformed; the rest of the file is still usable."""

    def __init__(self, source: str, line: int, message: str, fix: str | None = None) -> None:
        self.source, self.line = source, line
        super().__init__(f"{source}:{line}: {message}", fix)


class StoreError(RagError):
    """The index cannot be opened or written."""


class EmptyIndexError(StoreError):
    fix = "run `rag ingest PATH ...` (your files) or `rag ingest --bundled` (the corpus shipped with paper-rag) first"


class EmbedderMismatchError(StoreError):
    fix = "run `rag ingest --rebuild PATH` to re-embed the corpus with the configured model"


class IndexDamagedError(StoreError):
    fix = "run `rag ingest --rebuild PATH` to rebuild the index"


class IndexBusyError(StoreError):
    """The index is being written (a rebuild or an ingest holds it) and cannot be read this moment."""

    fix = "try again in a moment: an ingest is writing to the index (`rag ingest` holds its lock)"


class LockedError(StoreError):
    fix = "wait for the other ingest to finish, or stop it"


class ChromaUnavailableError(StoreError):
    fix = "check that the Chroma server is running (`chroma run --path DIR --port N`) and RAG_STORE__CHROMA_URL"


class BackendError(RagError):
    """An answer backend failed (unreachable, model missing, timeout, bad response)."""


class BackendUnavailableError(BackendError):
    """The backend cannot be used at all; `auto` falls back to the next one."""


class PaperNotFoundError(NotFoundError):
    """A paper id that is not in the index."""

    fix = ("use an id from `rag papers list` or a search result (paper_id), e.g. arxiv:2406.06563, or the "
           "paper's exact title, arXiv id or DOI")


# ------------------------------------------------------------------ how each interface reports an error

INVALID_PARAMS, INTERNAL_ERROR = -32602, -32603  # JSON-RPC error codes (MCP answers with them)


@dataclass(frozen=True)
class Outcome:
    """How every interface reports one kind of error.

    ``exit_code``: ``rag``'s exit status; ``status``, ``type``, ``code``: the API's HTTP status and
    OpenAI error object (an MCP tool error carries the same object as structured content);
    ``mcp_code``: the JSON-RPC error code of a failed MCP request (a resource read);
    ``retry_after``: seconds a client should wait (the API's ``Retry-After``), if it should retry."""

    exit_code: int
    status: int
    type: str
    code: str
    mcp_code: int
    retry_after: int | None = None


_REQUEST, _SERVER = "invalid_request_error", "server_error"
OUTCOMES: dict[type[RagError], Outcome] = {  # `outcome` walks an error's MRO: a subclass may have its own row
    UnknownModelError: Outcome(2, 404, _REQUEST, "model_not_found", INVALID_PARAMS),
    NotFoundError: Outcome(2, 404, _REQUEST, "not_found", INVALID_PARAMS),
    TooLargeError: Outcome(2, 413, _REQUEST, "request_too_large", INVALID_PARAMS),
    InputError: Outcome(2, 400, _REQUEST, "invalid_request", INVALID_PARAMS),
    BusyError: Outcome(2, 429, "rate_limit_error", "rate_limit_exceeded", INTERNAL_ERROR, retry_after=1),
    BackendError: Outcome(2, 503, _SERVER, "backend_unavailable", INTERNAL_ERROR),
    StoreError: Outcome(2, 503, _SERVER, "backend_unavailable", INTERNAL_ERROR),
    RagError: Outcome(2, 500, _SERVER, "internal_error", INTERNAL_ERROR),
}


def outcome(err: RagError | type[RagError]) -> Outcome:
    """The table's row for the nearest class of ``err`` (an error or an error class) in it.

    >>> outcome(PaperNotFoundError("no paper with id 'x'")).status, outcome(IndexBusyError).status
    (404, 503)
    """
    cls = err if isinstance(err, type) else type(err)
    return next(OUTCOMES[base] for base in cls.__mro__ if base in OUTCOMES)
