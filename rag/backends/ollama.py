"""The ``ollama`` backend: Ollama's native ``/api/chat`` through the ``ollama`` client, and its
settings block (``RAG_LLM__OLLAMA_URL``, ``OLLAMA_MODEL``, ``NUM_CTX``, ``KEEP_ALIVE``).

``num_ctx`` is sent on every request: Ollama's default context is small and it truncates the
prompt silently. ``choose`` and ``structured`` send a JSON-schema ``format``.

Left out: retries (a failed answer is reported, not silently re-asked) and the ``llama_index``
wrapper (the plain client gives cleaner streaming and error mapping). ``ollama`` and ``httpx``
are imported on use.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import Field

from rag.backends.base import (
    CHECK_TIMEOUT_S,
    BackendTimeoutError,
    LLMCommon,
    Message,
    ModelNotFoundError,
    approx_tokens,
    guarded,
    one_line,
    pick,
    served_model,
    spellings,
)
from rag.errors import BackendError, BackendUnavailableError


class OllamaSettings(LLMCommon):
    """The ``ollama`` backend's settings."""

    ollama_url: str = Field("http://127.0.0.1:11434", description="Base URL of the Ollama server.")
    ollama_model: str = Field(
        "qwen2.5-coder:1.5b", description="Ollama model used when `model` is unset (the bundled default's twin)."
    )
    num_ctx: int = Field(
        8192, ge=512, description="Context window requested from Ollama (its default silently truncates)."
    )
    keep_alive: str = Field("10m", description="How long Ollama keeps the model loaded after a request.")


def _ollama_name(name: str) -> str:
    """Ollama's implicit tag: ``llama3.2`` is ``llama3.2:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class OllamaBackend:
    """Ollama's native chat API (``POST /api/chat``, NDJSON streaming)."""

    name = "ollama"
    capable = True

    def __init__(self, settings: OllamaSettings) -> None:
        self.url = settings.ollama_url.rstrip("/")
        self.model = served_model(settings, settings.ollama_model)
        self.context_window, self.keep_alive = settings.num_ctx, settings.keep_alive
        self.timeout_s, self.seed, self.max_new_tokens = settings.timeout_s, settings.seed, settings.max_new_tokens
        self._clients: dict[float, Any] = {}

    @property
    def prompt_budget(self) -> int:
        return self.context_window - self.max_new_tokens

    def describe(self) -> str:
        return f"Ollama model {self.model} at {self.url}"

    def _client(self, timeout: float) -> Any:
        if timeout not in self._clients:
            import ollama

            self._clients[timeout] = ollama.Client(host=self.url, timeout=timeout)
        return self._clients[timeout]

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    def listed(self, timeout_s: float = CHECK_TIMEOUT_S) -> set[str]:
        """The model names the server lists now, with and without Ollama's implicit ``:latest``."""
        names = {m.model or "" for m in self._client(timeout_s).list().models}
        return {n for name in names for n in (name, name.removesuffix(":latest")) if n}

    def check(self) -> None:
        """``GET /api/tags``: the server answers and has the model pulled."""
        timeout = min(self.timeout_s, CHECK_TIMEOUT_S)
        try:
            listing = self._client(timeout).list()
        except ValueError as exc:  # JSON or schema: something else listens there
            raise BackendUnavailableError(
                f"the server at {self.url} does not speak Ollama's API ({type(exc).__name__})",
                "set RAG_LLM__OLLAMA_URL to the Ollama server (default port 11434)",
            ) from exc
        except Exception as exc:
            err = self._map(exc, timeout)
            if err is None:
                raise
            raise BackendUnavailableError(str(err), err.fix) from exc
        names = {_ollama_name(m.model or "") for m in listing.models}
        if _ollama_name(self.model) not in names:
            raise ModelNotFoundError(
                f"Ollama at {self.url} has no model '{self.model}'", f"run `ollama pull {self.model}`"
            )

    def _options(self, max_tokens: int, temperature: float, stop: list[str] | None) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_ctx": self.context_window, "temperature": temperature, "num_predict": max_tokens, "seed": self.seed,
        }
        if stop:
            options["stop"] = list(stop)
        return options

    def stream(
        self, messages: list[Message], *, max_tokens: int, temperature: float, stop: list[str] | None = None,
        cite: Sequence[int] = (),
    ) -> Iterator[str]:
        def deltas() -> Iterator[str]:
            chunks = self._client(self.timeout_s).chat(
                model=self.model, messages=[{"role": m.role, "content": m.content} for m in messages], stream=True,
                options=self._options(max_tokens, temperature, stop), keep_alive=self.keep_alive)
            for chunk in chunks:
                yield (chunk.message.content if chunk.message else None) or ""

        return guarded(deltas(), lambda exc: self._map(exc, self.timeout_s))

    def choose(self, messages: list[Message], options: Sequence[str]) -> str | None:
        """A structured output (``format``: a JSON schema of one enum string), so the reply is one option."""
        try:
            reply = self._client(self.timeout_s).chat(
                model=self.model, messages=[{"role": m.role, "content": m.content} for m in messages], stream=False,
                format={"type": "string", "enum": spellings(options)}, options=self._options(8, 0.0, None),
                keep_alive=self.keep_alive)
        except Exception as exc:
            err = self._map(exc, self.timeout_s)
            if err is None:
                raise
            raise err from exc
        text = (reply.message.content if reply.message else None) or ""
        with contextlib.suppress(ValueError):
            text = str(json.loads(text))
        return pick(text, options)

    def structured(self, messages: list[Message], schema: dict[str, Any], max_tokens: int) -> str:
        """Ollama's structured outputs: ``format`` is the JSON schema."""
        try:
            reply = self._client(self.timeout_s).chat(
                model=self.model, messages=[{"role": m.role, "content": m.content} for m in messages], stream=False,
                format=schema, options=self._options(max_tokens, 0.0, None), keep_alive=self.keep_alive)
        except Exception as exc:
            err = self._map(exc, self.timeout_s)
            if err is None:
                raise
            raise err from exc
        return (reply.message.content if reply.message else None) or ""

    def _map(self, exc: Exception, timeout: float) -> BackendError | None:
        import httpx
        import ollama

        if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError | ConnectionError):
            return BackendUnavailableError(f"Ollama not reachable at {self.url}", "run `ollama serve`")
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeoutError(
                f"Ollama did not answer within {timeout:g}s",
                "raise RAG_LLM__TIMEOUT_S, or use a smaller model (the first request also loads the model)",
            )
        if isinstance(exc, ollama.ResponseError):
            msg = one_line(exc.error)
            if exc.status_code == 404 and "model" in msg and "not found" in msg:
                return ModelNotFoundError(f"Ollama model '{self.model}' not found", f"run `ollama pull {self.model}`")
            if exc.status_code == 404:
                return BackendError(
                    f"{self.url} answered 404 ({msg}): not an Ollama server, or a path prefix too many",
                    "set RAG_LLM__OLLAMA_URL to the Ollama server, e.g. http://127.0.0.1:11434",
                )
            if exc.status_code == -1:  # an {"error": ...} object inside the NDJSON stream
                return BackendError(
                    f"Ollama failed while answering: {msg}",
                    "see the server log (the terminal running `ollama serve`); "
                    "out of memory often means RAG_LLM__NUM_CTX is too large",
                )
            if exc.status_code == 503:
                return BackendError(
                    f"Ollama is busy (503: {msg})", "retry shortly, or raise OLLAMA_MAX_QUEUE on the server"
                )
            return BackendError(
                f"Ollama answered {exc.status_code}: {msg}",
                "see the server log (the terminal running `ollama serve`); "
                "out of memory often means RAG_LLM__NUM_CTX is too large",
            )
        if isinstance(exc, httpx.TransportError | json.JSONDecodeError):
            return BackendError(
                f"Ollama at {self.url} dropped the connection mid-answer ({type(exc).__name__})",
                "check that `ollama serve` is still running (it may have crashed or run out of memory), then retry",
            )
        return None

