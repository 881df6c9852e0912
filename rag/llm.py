"""The answer backends behind one small interface: Ollama, any OpenAI-compatible server,
and the bundled llama.cpp models (``rag.models``).

Every backend streams text deltas for a list of chat messages and maps its failures to
``BackendError`` subclasses whose ``str()`` is one line naming the problem and whose
``.fix`` names the action that resolves it::

    >>> backend, notes = select_backend(Settings().llm)      # doctest: +SKIP
    >>> for delta in backend.stream([Message("user", "Hi")], max_tokens=16, temperature=0.1):
    ...     print(delta, end="")                             # doctest: +SKIP

A failure after some text was yielded raises ``StreamInterrupted`` carrying ``.partial``,
the text received so far, so a caller can keep what it already showed.

- ``ollama``: Ollama's native ``/api/chat`` through the ``ollama`` client. ``num_ctx`` is sent
  on every request: Ollama's default context is small and it truncates the prompt silently.
- ``openai``: any OpenAI-compatible ``/v1`` server (vLLM, llama.cpp's server, Ollama's ``/v1``)
  through the ``openai`` client. Such servers take their context size from their own launch
  options (Ollama's ``/v1`` cannot be given ``num_ctx``), so ``context_window`` is what the
  settings claim, not what the server enforces.
- ``llamacpp``: llama-cpp-python in this process: a bundled model (Qwen2.5-Coder-1.5B-Instruct by
  default) or any GGUF file. One ``Llama`` per (file, n_ctx, threads, repack, draft) per process,
  shared by every backend made for it; generation on one ``Llama`` is serialised by a lock.
  llama-cpp-python reuses the KV cache of the longest prompt prefix shared with the previous
  call, so prompts keep what is fixed (the system prompt) first.

A backend declares what it can do: ``prompt_budget`` (tokens for everything but the answer),
``capable`` (follows instructions well enough to rewrite follow-ups and judge whether the
sources answer; SmolLM2-135M does not), ``describe()``, and ``choose(messages, options)`` for a
one-word verdict (a grammar on llama.cpp, a JSON-schema ``format`` on Ollama). ``stream(...,
cite=[1, 2])`` asks for every sentence to end in one of those citation markers: llama.cpp
enforces it with a grammar, the HTTP backends leave it to the prompt.

What this leaves out: the extractive no-LLM backend, prompts and citations (``rag.answer``),
retries (a failed answer is reported, not silently re-asked), and the ``llama_index`` wrappers
(the plain clients give cleaner streaming and error mapping). ``import rag.llm`` imports none
of ``ollama``, ``openai``, ``httpx`` or ``llama_cpp``; each backend imports its client on use.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rag import models
from rag.errors import BackendError, BackendUnavailableError

if TYPE_CHECKING:
    from rag.settings import LLMSettings

__all__ = [
    "Backend",
    "citation_grammar",
    "BackendTimeoutError",
    "ContextOverflowError",
    "LlamaCppBackend",
    "Message",
    "ModelNotFoundError",
    "OllamaBackend",
    "OpenAIBackend",
    "StreamInterrupted",
    "approx_tokens",
    "make_backend",
    "no_extra_buffers",
    "select_backend",
    "served_models",
]

log = logging.getLogger(__name__)
CHARS_PER_TOKEN = 3.5
CHECK_TIMEOUT_S = 5.0  # check() is a reachability probe: never wait the full answer timeout
HTTP_PROMPT_SHARE = 0.75  # share of an HTTP backend's window given to the prompt


# --------------------------------------------------------------------------- interface


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@runtime_checkable
class Backend(Protocol):
    name: str  # "ollama" | "openai" | "llamacpp"
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


def _one_line(text: object, limit: int = 300) -> str:
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


# --------------------------------------------------------------------------- ollama


def served_model(settings: LLMSettings, default: str) -> str:
    """The model an HTTP backend asks its server for: ``model`` unless it names a local file or bundled model."""
    return settings.model if settings.model and not models.is_local_model(settings.model) else default


def _ollama_name(name: str) -> str:
    """Ollama's implicit tag: ``llama3.2`` is ``llama3.2:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def served_models(settings: LLMSettings, timeout_s: float = CHECK_TIMEOUT_S) -> set[str]:
    """The model names the configured Ollama and OpenAI-compatible servers list now (Ollama's
    with and without their implicit ``:latest``); a server that does not answer lists none."""
    names: set[str] = set()
    try:
        for m in OllamaBackend(settings)._client(timeout_s).list().models:
            name = m.model or ""
            names |= {name, name.removesuffix(":latest")}
    except Exception as exc:  # noqa: BLE001 - down or not Ollama: it serves nothing
        log.debug("no model list from Ollama at %s: %s", settings.ollama_url, exc)
    try:
        openai = OpenAIBackend(settings)
        names |= {m.id for m in openai._client().with_options(timeout=timeout_s).models.list()}
    except Exception as exc:  # noqa: BLE001
        log.debug("no model list from %s: %s", settings.openai_base_url, exc)
    return {n for n in names if n}


class OllamaBackend:
    """Ollama's native chat API (``POST /api/chat``, NDJSON streaming)."""

    name = "ollama"
    capable = True

    def __init__(self, settings: LLMSettings) -> None:
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
            msg = _one_line(exc.error)
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


# --------------------------------------------------------------------------- openai-compatible


class OpenAIBackend:
    """Any OpenAI-compatible server: streaming ``POST {base_url}/chat/completions``."""

    name = "openai"
    capable = True

    def __init__(self, settings: LLMSettings) -> None:
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
            msg = _one_line(exc.message)
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
            return BackendError(f"{where} failed while answering: {_one_line(exc.message)}", "see the server's log")
        if isinstance(exc, httpx.TransportError):
            return BackendError(
                f"{where} dropped the connection mid-answer ({type(exc).__name__})",
                "check that the server is still running (it may have crashed or run out of memory), then retry",
            )
        return None


# --------------------------------------------------------------------------- llama.cpp in-process


def _cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return any(line.startswith("flags") and " amx_int8" in line for line in f)
    except OSError:
        return False


@contextlib.contextmanager
def no_extra_buffers() -> Iterator[None]:
    """Load ``Llama`` models with ``use_extra_bufts=False`` (llama.cpp's ``--no-repack``).

    llama-cpp-python does not expose the flag, so the default-params factory it calls is
    wrapped while the model loads. Needed on AMX CPUs: with repacking on, 0.3.36 crashes
    in ``ggml_backend_amx_mul_mat`` at the first decode of the bundled Q4_1 model.
    """
    from llama_cpp import llama_cpp as lib

    original = lib.llama_model_default_params

    def params() -> Any:
        p = original()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = original


def maps_gguf(repack: bool) -> bool:
    """Whether llama.cpp memory-maps the GGUF (``use_mmap``): only when it does not repack.

    Repacking copies most weights (597 of the bundled Qwen's 1,060 MiB) into llama.cpp's own
    buffers, while the mapping keeps the whole file resident as well: 1.87 GB RSS after loading
    Qwen, against 1.28 GB when the file is read into memory once (`rag bench --only memory`;
    README, Performance). Without repacking, the mapped file is the weights, shared with other
    processes mapping it and dropped by the kernel under pressure, so it stays mapped.
    """
    return not repack


_LOAD_LOCK = threading.Lock()
_LLAMAS: dict[tuple[str, int, int, bool, int], tuple[Any, threading.Lock]] = {}


def _close_llamas() -> None:
    """Free loaded models before interpreter shutdown (llama-cpp-python's own __del__ runs too
    late then, and prints a TypeError traceback)."""
    for llama, _ in _LLAMAS.values():
        with contextlib.suppress(Exception):
            llama.close()
    _LLAMAS.clear()


def _load_llama(path: Path, n_ctx: int, threads: int, repack: bool, draft: int = 0) -> tuple[Any, threading.Lock]:
    key = (str(path.resolve()), n_ctx, threads, repack, draft)
    with _LOAD_LOCK:
        if key not in _LLAMAS:
            from llama_cpp import Llama

            if not _LLAMAS:
                atexit.register(_close_llamas)
            extra: dict[str, Any] = {}
            if draft:
                from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

                # verifying drafted tokens needs the logits of every position: n_ctx x vocab floats
                # (2.5 GB for Qwen's 152k vocabulary at n_ctx 4096), one reason it is off by default
                extra["draft_model"] = LlamaPromptLookupDecoding(num_pred_tokens=draft)
                extra["logits_all"] = True
            with contextlib.nullcontext() if repack else no_extra_buffers():
                # threads also bounds prompt evaluation (llama-cpp-python would use every core for it);
                # use_mmap: see `maps_gguf`
                llama = Llama(model_path=key[0], n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                              use_mmap=maps_gguf(repack), verbose=False, **extra)
            _LLAMAS[key] = (llama, threading.Lock())
        return _LLAMAS[key]


KV_HEADROOM = 256  # tokens of llama.cpp context past a budgeted prompt and its answer (template, a long question)


def llamacpp_prompt_budget(settings: LLMSettings) -> int:
    """Tokens a llama.cpp prompt is fitted to: ``llamacpp_prompt_tokens``, less if the window is small."""
    return min(settings.context_window - settings.max_new_tokens, settings.llamacpp_prompt_tokens)


def llama_context(settings: LLMSettings) -> int:
    """``n_ctx`` for llama.cpp: a budgeted prompt, its answer and `KV_HEADROOM`, in steps of 256,
    at most ``context_window``.

    llama.cpp allocates the KV cache for all ``n_ctx`` tokens up front, whatever the prompts (the
    bundled Qwen: 28 KiB a token, 112 MiB at 4,096), while every prompt is fitted to the prompt
    budget (1,400 tokens by default): 2,048 holds it and 256 answer tokens with room to spare.

    >>> from rag.settings import LLMSettings
    >>> llama_context(LLMSettings()), llama_context(LLMSettings(llamacpp_prompt_tokens=6000))
    (2048, 4096)
    """
    needed = llamacpp_prompt_budget(settings) + settings.max_new_tokens + KV_HEADROOM
    return min(settings.context_window, -(-needed // 256) * 256)


def citation_grammar(numbers: Sequence[int], max_sentences: int = 4) -> str:
    r"""GBNF for an answer of 1..``max_sentences`` sentences, each ending in citation markers drawn
    from ``numbers``; text never contains brackets, so no placeholder or fence can be written.

    >>> print(citation_grammar([1, 3], max_sentences=2))
    root ::= sentence (" " sentence)?
    sentence ::= [A-Za-z0-9"(\u00c0-\uffff] [^\[\]\n<>]+ cite cite? cite? "."?
    cite ::= " [" num "]"
    num ::= "1" | "3"
    """
    more = "".join(' (" " sentence)?' for _ in range(max_sentences - 1))
    nums = " | ".join(f'"{n}"' for n in numbers)
    return (f"root ::= sentence{more}\n"
            'sentence ::= [A-Za-z0-9"(\\u00c0-\\uffff] [^\\[\\]\\n<>]+ cite cite? cite? "."?\n'
            'cite ::= " [" num "]"\n'
            f"num ::= {nums}")


class LlamaCppBackend:
    """A GGUF model run in this process by llama-cpp-python (the best bundled model by default)."""

    name = "llamacpp"

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        self.bundled = models.BUNDLED.get(settings.model or "") if settings.model else models.best_installed()
        if settings.model and self.bundled is None:
            self.model_ref = settings.model  # a GGUF path
        elif self.bundled is not None:
            self.model_ref = self.bundled.name
        else:
            self.model_ref = ""
        self.model = self.bundled.name if self.bundled else Path(self.model_ref).name or "(none)"
        self.capable = self.bundled.capable if self.bundled else True
        self.context_window = llama_context(settings)  # the n_ctx loaded: what the prompt budget needs
        self.threads = settings.threads or os.cpu_count() or 1
        self.repack = settings.llamacpp_repack if settings.llamacpp_repack is not None else not _cpu_has_amx()
        self.draft = settings.prompt_lookup
        self._path: Path | None = None

    @property
    def prompt_budget(self) -> int:
        return llamacpp_prompt_budget(self.settings)

    def describe(self) -> str:
        if self.bundled:
            return f"bundled {self.bundled.label}"
        return f"llama.cpp model {self.model}"

    @property
    def path(self) -> Path:
        """The GGUF file (a bundled model is assembled from its packages the first time)."""
        if self._path is None:
            if not self.model_ref:
                raise BackendUnavailableError(
                    "no bundled instruction model is installed",
                    f"{models.QWEN.install_fix}, or choose one with --model ({', '.join(models.BUNDLED)}, or a "
                    "GGUF path)")
            self._path = self.bundled.gguf_path(self.settings.model_dir) if self.bundled else \
                models.resolve_gguf(self.model_ref, self.settings.model_dir)
        return self._path

    @property
    def llama(self) -> Any:
        """The shared ``llama_cpp.Llama`` (loaded on first use, then cached for the process)."""
        return self._loaded()[0]

    def _loaded(self) -> tuple[Any, threading.Lock]:
        if find_spec("llama_cpp") is None:
            raise BackendUnavailableError(
                "llama-cpp-python is not installed", "pip install 'paper-rag[llamacpp]' -c constraints.txt"
            )
        path = self.path
        try:
            return _load_llama(path, self.context_window, self.threads, self.repack, self.draft)
        except ValueError as exc:  # llama_cpp: "Failed to load model from file"
            raise BackendUnavailableError(
                f"llama.cpp cannot load {path.name}: {_one_line(exc)}",
                "check that the file is a complete GGUF this llama-cpp-python version supports",
            ) from exc

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def check(self) -> None:
        """llama_cpp importable, the GGUF present and loadable (loading is cached, so not wasted)."""
        self._loaded()

    def _complete(self, messages: list[Message], grammar: str | None, **kwargs: Any) -> Iterator[str]:
        from llama_cpp import LlamaGrammar

        llama, lock = self._loaded()
        with lock:  # one generation at a time per Llama: its KV cache is not shareable
            chunks = llama.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in messages], stream=True,
                grammar=LlamaGrammar.from_string(grammar, verbose=False) if grammar else None,
                repeat_penalty=self.bundled.repeat_penalty if self.bundled else 1.0, seed=self.settings.seed,
                **kwargs)
            for chunk in chunks:
                yield (chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None) or ""

    def stream(
        self, messages: list[Message], *, max_tokens: int, temperature: float, stop: list[str] | None = None,
        cite: Sequence[int] = (),
    ) -> Iterator[str]:
        grammar = citation_grammar(cite) if cite else None
        return guarded(self._complete(messages, grammar, max_tokens=max_tokens, temperature=temperature,
                                      stop=list(stop) if stop else None), self._map)

    def choose(self, messages: list[Message], options: Sequence[str]) -> str | None:
        grammar = "root ::= " + " | ".join(json.dumps(o) for o in spellings(options))
        reply = "".join(guarded(self._complete(messages, grammar, max_tokens=8, temperature=0.0), self._map))
        return pick(reply, options)

    def structured(self, messages: list[Message], schema: dict[str, Any], max_tokens: int) -> str:
        """Greedy JSON under llama.cpp's grammar for ``schema`` (``json_schema_to_gbnf``)."""
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        grammar = json_schema_to_gbnf(json.dumps(schema))
        return "".join(guarded(self._complete(messages, grammar, max_tokens=max_tokens, temperature=0.0), self._map))

    def _map(self, exc: Exception) -> BackendError | None:
        msg = _one_line(exc)
        if isinstance(exc, ValueError) and "exceed context window" in msg:
            return ContextOverflowError(
                f"prompt does not fit {self.model}'s context window: {msg}",
                "lower RAG_ANSWER__MAX_CONTEXT_PAPERS, or raise RAG_LLM__LLAMACPP_PROMPT_TOKENS (llama.cpp's "
                "context follows it, up to RAG_LLM__CONTEXT_WINDOW)",
            )
        if isinstance(exc, ValueError):
            return BackendError(f"llama.cpp failed: {msg}", "retry with a shorter prompt or fewer max_tokens")
        if isinstance(exc, RuntimeError):  # llama_decode returned an error
            return BackendError(f"llama.cpp failed: {msg}", "retry; lower RAG_LLM__CONTEXT_WINDOW")
        return None


# --------------------------------------------------------------------------- selection

BACKENDS: dict[str, type] = {"ollama": OllamaBackend, "openai": OpenAIBackend, "llamacpp": LlamaCppBackend}


def make_backend(name: str, settings: LLMSettings) -> Backend:
    """The backend called ``name`` (ollama | openai | llamacpp), configured but not checked."""
    if name not in BACKENDS:
        raise ValueError(f"unknown LLM backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return BACKENDS[name](settings)


def select_backend(settings: LLMSettings) -> tuple[Backend | None, list[str]]:
    """The backend that will answer, and human lines saying why.

    ``auto``: a bundled model name or GGUF path in ``model`` goes straight to llama.cpp; otherwise
    Ollama if it answers and has the model; else the best installed bundled model (never SmolLM2,
    which answers worse than quoting: eval/README.md); else ``None`` (the caller answers
    extractively). An explicit backend is made and checked; its ``BackendUnavailableError``
    propagates. ``extractive`` gives ``(None, [note])``.
    """
    if settings.backend == "extractive":
        return None, ["answering extractively (RAG_LLM__BACKEND=extractive): sentences quoted from the abstracts"]
    if settings.backend == "auto" and models.is_local_model(settings.model):
        settings = settings.model_copy(update={"backend": "llamacpp"})
    if settings.backend != "auto":
        backend = make_backend(settings.backend, settings)
        backend.check()
        return backend, [f"answering with {backend.describe()}"]

    ollama = OllamaBackend(settings)
    try:
        ollama.check()
        return ollama, [f"answering with {ollama.describe()}"]
    except BackendUnavailableError as exc:
        ollama_err = exc
    if isinstance(ollama_err, ModelNotFoundError):
        advice = f"run `ollama pull {ollama.model}` to answer through Ollama"
    else:
        advice = f"run `ollama serve` and `ollama pull {ollama.model}` to answer through Ollama"
    reason = str(ollama_err)

    try:
        local = LlamaCppBackend(settings)
        local.check()
    except BackendUnavailableError as exc:
        return None, [
            f"{reason}: {advice}",
            f"no bundled model available ({exc}): answering extractively; {exc.fix} for generated answers",
        ]
    return local, [f"answering with {local.describe()} ({reason}; {advice})"]  # information first: it works
