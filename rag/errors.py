"""The paper-rag error tree. Every error carries the fix to show the user.

``RagError`` is what user-facing layers (CLI, web app) catch and print as one line:
``str(err)`` is the problem, ``err.fix`` the action that resolves it. Programming
errors are not wrapped here; they stay ordinary exceptions.
"""

from __future__ import annotations


class RagError(Exception):
    """Base of all errors a user can act on."""

    fix: str = ""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        if fix is not None:
            self.fix = fix

    def user_message(self) -> str:
        return f"{self}\n  fix: {self.fix}" if self.fix else str(self)


class InputError(RagError):
    """A file, record, question or option the user gave cannot be used."""


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


class PaperNotFoundError(InputError):
    """A paper id that is not in the index."""

    fix = ("use an id from `rag papers list` or a search result (paper_id), e.g. arxiv:2406.06563, or the "
           "paper's exact title, arXiv id or DOI")
