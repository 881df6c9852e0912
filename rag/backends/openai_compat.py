"""The ``openai`` backend: any OpenAI-compatible ``/v1`` server (vLLM, llama.cpp's server, Ollama's
``/v1``) through the ``openai`` client, and its settings block (``RAG_LLM__OPENAI_BASE_URL``,
``OPENAI_API_KEY``, ``OPENAI_MODEL``).

Such servers take their context size from their own launch options (Ollama's ``/v1`` cannot be
given ``num_ctx``), so ``context_window`` is what the settings claim, not what the server
enforces; the prompt gets `HTTP_PROMPT_SHARE` of it. Citations and verdicts are left to the prompt
(``response_format`` schemas are not served everywhere).

Left out: retries (a retried answer doubles the wait before the user sees the error). ``openai``
and ``httpx`` are imported on use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import Field

from rag.backends.base import (
    CHECK_TIMEOUT_S,
    BackendTimeoutError,
    ContextOverflowError,
    LLMCommon,
    Message,
    ModelNotFoundError,
    approx_tokens,
    guarded,
    one_line,
    pick,
    served_model,
)
from rag.errors import BackendError, BackendUnavailableError

HTTP_PROMPT_SHARE = 0.75  # share of an HTTP backend's window given to the prompt


class OpenAISettings(LLMCommon):
    """The ``openai`` backend's settings."""

    openai_base_url: str = Field("http://127.0.0.1:8080/v1", description="Base URL of an OpenAI-compatible server.")
    openai_api_key: str = Field("not-needed", description="API key for the OpenAI-compatible server.")
    openai_model: str = Field("local", description="Model name sent to the OpenAI-compatible server.")


class OpenAIBackend:
    """Any OpenAI-compatible server: streaming ``POST {base_url}/chat/completions``."""

    name = "openai"
    capable = True

    def __init__(self, settings: OpenAISettings) -> None:
        self.base_url = settings.openai_base_url.rstrip("/")
        self.model = served_model(settings, settings.openai_model)
        self.context_window, self.api_key = settings.context_window, settings.openai_api_key
        self.timeout_s, self.seed, self.max_new_tokens = settings.timeout_s, settings.seed, settings.max_new_tokens
        self.served: list[str] = []  # model ids the server listed at check()
        self._client_obj: Any = None

    @property
    def prompt_budget(self) -> int:
        return int(self.context_window * HTTP_PROMPT_SHARE)

    def describe(self) -> str:
        return f"model {self.model} at {self.base_url}"

    def _client(self) -> Any:
        if self._client_obj is None:
            import openai

            # No retries: a retried answer doubles the wait before the user sees the error.
            self._client_obj = openai.OpenAI(
                base_url=self.base_url, api_key=self.api_key, timeout=self.timeout_s, max_retries=0
            )
        return self._client_obj

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    def listed(self, timeout_s: float = CHECK_TIMEOUT_S) -> set[str]:
        """The model ids the server lists now."""
        return {m.id for m in self._client().with_options(timeout=timeout_s).models.list() if m.id}

    def check(self) -> None:
        """``GET {base_url}/models``: the server answers. The model is not required to be listed:
        llama.cpp's server answers any model name; a missing model surfaces at ``stream``."""
        timeout = min(self.timeout_s, CHECK_TIMEOUT_S)
        try:
            self.served = [m.id for m in self._client().with_options(timeout=timeout).models.list()]
        except Exception as exc:
            err = self._map(exc, timeout)
            if err is None:
                raise
            raise BackendUnavailableError(str(err), err.fix) from exc

    def stream(
        self, messages: list[Message], *, max_tokens: int, temperature: float, stop: list[str] | None = None,
        cite: Sequence[int] = (),
    ) -> Iterator[str]:
        def deltas() -> Iterator[str]:
            chunks = self._client().chat.completions.create(
                model=self.model, messages=[{"role": m.role, "content": m.content} for m in messages], stream=True,
                max_tokens=max_tokens, temperature=temperature, stop=list(stop) if stop else None, seed=self.seed)
            for chunk in chunks:
                yield (chunk.choices[0].delta.content if chunk.choices else None) or ""

        return guarded(deltas(), lambda exc: self._map(exc, self.timeout_s))

    def choose(self, messages: list[Message], options: Sequence[str]) -> str | None:
        """A few greedy tokens, matched to an option (``response_format`` schemas are not served everywhere)."""
        longest = max(len(o) for o in options)
        return pick("".join(self.stream(messages, max_tokens=max(2, longest // 2), temperature=0.0)), options)

    def structured(self, messages: list[Message], schema: dict[str, Any], max_tokens: int) -> str:
        """Greedy text; the prompt asks for the JSON (``response_format`` schemas are not served everywhere)."""
        return "".join(self.stream(messages, max_tokens=max_tokens, temperature=0.0))

    def _map(self, exc: Exception, timeout: float) -> BackendError | None:
        import httpx
        import openai

        where = f"OpenAI-compatible server at {self.base_url}"
        if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException) and not isinstance(
            exc, httpx.ConnectTimeout
        ):
            return BackendTimeoutError(
                f"{where} did not answer within {timeout:g}s", "raise RAG_LLM__TIMEOUT_S, or use a smaller model"
            )
        if isinstance(exc, openai.APIConnectionError | httpx.ConnectError | httpx.ConnectTimeout):
            return BackendUnavailableError(
                f"{where} not reachable",
                "start it (e.g. `python -m llama_cpp.server --model FILE.gguf --port 8080`, `vllm serve MODEL`, "
                "`ollama serve`) or set RAG_LLM__OPENAI_BASE_URL",
            )
        if isinstance(exc, openai.APIStatusError):
            msg = one_line(exc.message)
            code = exc.status_code
            if code == 404:
                pull = f"run `ollama pull {self.model}`, or " if "pull" in msg else ""
                return ModelNotFoundError(
                    f"{where}: model '{self.model}' or endpoint not found (404: {msg})",
                    f"{pull}set RAG_LLM__OPENAI_MODEL to a model the server serves; "
                    "check that RAG_LLM__OPENAI_BASE_URL ends in /v1",
                )
            if code in (401, 403):
                return BackendUnavailableError(f"{where} refused the API key ({code})", "set RAG_LLM__OPENAI_API_KEY")
            if code == 400 and "context" in msg.lower():
                return ContextOverflowError(
                    f"{where}: prompt too long ({msg})",
                    "lower RAG_ANSWER__MAX_CONTEXT_PAPERS or start the server with a larger context",
                )
            if code in (429, 503):
                return BackendError(f"{where} is busy ({code}: {msg})", "retry shortly")
            return BackendError(f"{where} answered {code}: {msg}", "see the server's log")
        if isinstance(exc, openai.APIError):  # an error event inside the SSE stream
            return BackendError(f"{where} failed while answering: {one_line(exc.message)}", "see the server's log")
        if isinstance(exc, httpx.TransportError):
            return BackendError(
                f"{where} dropped the connection mid-answer ({type(exc).__name__})",
                "check that the server is still running (it may have crashed or run out of memory), then retry",
            )
        return None
