"""What every answer backend shares: the `Backend` interface, `Message`, the errors a backend
raises, the settings every backend reads (`LLMCommon`) and the helpers that map a stream's
failures (`guarded`) and read a one-word verdict (`pick`).

Every backend streams text deltas for a list of chat messages and maps its failures to
``BackendError`` subclasses whose ``str()`` is one line naming the problem and whose
``.fix`` names the action that resolves it::

    >>> backend, notes = select_backend(Settings().llm)      # doctest: +SKIP
    >>> for delta in backend.stream([Message("user", "Hi")], max_tokens=16, temperature=0.1):
    ...     print(delta, end="")                             # doctest: +SKIP

A failure after some text was yielded raises ``StreamInterrupted`` carrying ``.partial``,
the text received so far, so a caller can keep what it already showed.

A backend declares what it can do: ``prompt_budget`` (tokens for everything but the answer),
``capable`` (follows instructions well enough to rewrite follow-ups and judge whether the
sources answer; SmolLM2-135M does not), ``describe()``, and ``choose(messages, options)`` for a
one-word verdict. ``stream(..., cite=[1, 2])`` asks for every sentence to end in one of those
citation markers. A backend that writes nothing and lets the answer step quote the abstracts
sets ``generates = False`` (`rag.backends.extractive`); `generates` reads it.

Left out: the backends themselves (one module each) and choosing one (`rag.backends.registry`).
Nothing here imports ``rag.settings``: the settings import the backends' blocks, not the reverse.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from rag import models
from rag.errors import BackendError, BackendUnavailableError

CHARS_PER_TOKEN = 3.5
CHECK_TIMEOUT_S = 5.0  # check() is a reachability probe: never wait the full answer timeout


class LLMCommon(BaseModel):
    """The settings every backend reads (``RAG_LLM__*``); each backend module adds its own block
    and `rag.settings.LLMSettings` joins them."""

    backend: str = Field(
        "auto", description="Answer backend: auto, extractive, ollama, openai, llamacpp or an installed plug-in's "
        "name; auto tries Ollama, then the best installed bundled model, then extractive (see "
        "rag.backends.registry.select_backend)."
    )
    model: str | None = Field(
        None, description="The model: a bundled name (qwen2.5-coder-1.5b, smollm2-135m) or a GGUF path runs in "
        "this process (llamacpp, and auto goes straight to it); any other name is a model the Ollama or "
        "OpenAI-compatible server serves. None: each backend's default."
    )
    context_window: int = Field(4096, ge=256, description="Prompt + answer tokens for llamacpp and openai backends.")
    temperature: float = Field(
        0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy: the same question on the same index "
        "gives the same answer."
    )
    seed: int = Field(0, description="Sampling seed, for temperatures above 0.")
    max_new_tokens: int = Field(256, ge=1, description="Upper bound on generated tokens.")
    timeout_s: float = Field(120.0, gt=0, description="Request timeout for HTTP backends, seconds.")


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@runtime_checkable
class Backend(Protocol):
    name: str  # "ollama" | "openai" | "llamacpp" | "extractive" | a plug-in's name
    model: str  # model name / gguf file name shown to users
    context_window: int  # tokens available for prompt + answer
    capable: bool  # follows instructions: may condense follow-ups and judge whether the sources answer

    @property
    def prompt_budget(self) -> int:
        """Tokens for system prompt, history, sources and question (the rest is the answer's)."""
        ...

    def describe(self) -> str: ...

    def stream(
        self, messages: list[Message], *, max_tokens: int, temperature: float, stop: list[str] | None = None,
        cite: Sequence[int] = (),
    ) -> Iterator[str]: ...

    def choose(self, messages: list[Message], options: Sequence[str]) -> str | None:
        """The option the model picks (greedy), or ``None`` when its reply names none."""
        ...

    def structured(self, messages: list[Message], schema: dict[str, Any], max_tokens: int) -> str:
        """The model's greedy reply as JSON text following ``schema`` where the backend can enforce it
        (a grammar on llama.cpp, ``format`` on Ollama); other backends rely on the prompt."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def check(self) -> None: ...


def generates(backend: Backend) -> bool:
    """Whether ``backend`` writes answers (every backend but the extractive one, which sets
    ``generates = False``; a plug-in need not declare it)."""
    return bool(getattr(backend, "generates", True))


class StreamInterrupted(BackendError):
    """The answer failed after some text was streamed; ``.partial`` holds that text and
    ``.reason`` the error the failure maps to (e.g. a ``BackendTimeoutError``)."""

    def __init__(
        self, message: str, fix: str | None = None, partial: str = "", reason: BackendError | None = None
    ) -> None:
        super().__init__(message, fix)
        self.partial = partial
        self.reason = reason


class ModelNotFoundError(BackendUnavailableError):
    """The server answers but does not have the requested model."""


class BackendTimeoutError(BackendError):
    """The server did not answer within ``timeout_s``."""


class ContextOverflowError(BackendError):
    """The prompt does not fit the model's context window."""


def approx_tokens(text: str) -> int:
    """Token estimate for backends whose tokenizer we cannot call: ``ceil(chars / 3.5)``.

    English prose averages about four characters per token in Llama-3-style vocabularies;
    3.5 errs on the side of overestimating, so a prompt budgeted with it rarely overflows.

    >>> approx_tokens("abcdefg"), approx_tokens(""), approx_tokens("a")
    (2, 0, 1)
    """
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters (an error message from a server)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _interrupted(err: BackendError, partial: str) -> BackendError:
    """``err`` as it should be raised: a ``StreamInterrupted`` once text has been yielded."""
    if not partial:
        return err
    return StreamInterrupted(f"answer interrupted after {len(partial)} characters: {err}", err.fix, partial, err)


def guarded(deltas: Iterable[str], to_error: Callable[[Exception], BackendError | None]) -> Iterator[str]:
    """The one stream guard: yield non-empty deltas; map a failure with ``to_error`` (``None``: not
    ours, re-raised) and raise it as ``StreamInterrupted`` once text was yielded."""
    parts: list[str] = []
    try:
        for text in deltas:
            if text:
                parts.append(text)
                yield text
    except BackendError as err:
        raise _interrupted(err, "".join(parts)) from err
    except Exception as exc:
        mapped = to_error(exc)
        if mapped is None:
            raise
        raise _interrupted(mapped, "".join(parts)) from exc


def spellings(options: Sequence[str]) -> list[str]:
    """Each option as the model may write it: a constraint that allows only ``yes`` would bend a
    model that starts its replies with ``Yes`` (measured: Qwen2.5-Coder then says "yes" to nearly
    every answerability check).

    >>> spellings(["yes", "no"])
    ['yes', 'Yes', 'YES', 'no', 'No', 'NO']
    """
    return list(dict.fromkeys(v for o in options for v in (o, o.capitalize(), o.upper())))


def pick(reply: str, options: Sequence[str]) -> str | None:
    """The option a short reply starts with (any case, quotes and punctuation ignored).

    >>> pick(' "Yes."', ["yes", "no"]), pick("No, it does not", ["yes", "no"]), pick("Maybe", ["yes", "no"])
    ('yes', 'no', None)
    """
    head = reply.strip().strip('"\'`*').lower()
    return next((o for o in options if head.startswith(o.lower())), None)


def served_model(settings: LLMCommon, default: str) -> str:
    """The model an HTTP backend asks its server for: ``model`` unless it names a local file or bundled model."""
    return settings.model if settings.model and not models.is_local_model(settings.model) else default
