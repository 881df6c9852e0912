"""The ``llamacpp`` backend: a GGUF model run in this process by llama-cpp-python (a bundled model,
Qwen2.5-Coder-1.5B-Instruct by default, or any GGUF file), and its settings block
(``RAG_LLM__MODEL_DIR``, ``THREADS``, ``LLAMACPP_PROMPT_TOKENS``, ``PROMPT_LOOKUP``, ``LLAMACPP_REPACK``).

llama-cpp-python reuses the KV cache of the longest prompt prefix shared with the previous call,
so prompts keep what is fixed (the system prompt) first. Its prompt budget is its own setting
(CPU prompt processing is what makes the first token slow), and ``n_ctx`` follows it
(`llama_context`). ``stream(..., cite=[1, 2])`` is enforced with a grammar (`citation_grammar`), as
are ``choose`` and ``structured``.

Left out: loading models and the AMX workaround (`rag.backends.llama_loader`), finding and
assembling bundled models (`rag.models`). ``llama_cpp`` is imported on use.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from pydantic import Field

from rag import models
from rag.backends.base import ContextOverflowError, LLMCommon, Message, guarded, one_line, pick, spellings
from rag.backends.llama_loader import cpu_has_amx, load_llama
from rag.environment import default_cache
from rag.errors import BackendError, BackendUnavailableError


class LlamaCppSettings(LLMCommon):
    """The ``llamacpp`` backend's settings."""

    model_dir: Path = Field(
        default_factory=lambda: default_cache() / "models",
        description="Where bundled models shipped in parts are assembled (once, checked by sha256).",
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads for llamacpp; None uses every core (llama.cpp's own default is half)."
    )
    llamacpp_prompt_tokens: int = Field(
        1400, ge=128, description="Prompt budget (system + sources + question + history) for the llamacpp backend: "
        "CPU prompt processing is what makes the first token slow, so local GGUF models get the best passages only."
    )
    prompt_lookup: int = Field(
        0, ge=0, le=16, description="llamacpp: tokens drafted by prompt-lookup decoding (answers copy spans of "
        "their sources); 0 turns it off."
    )
    llamacpp_repack: bool | None = Field(
        None,
        description="Let llama.cpp repack GGUF weights into CPU-specific layouts (AMX, AVX, ARM kernels). "
        "None: on, except on CPUs with AMX, where llama-cpp-python 0.3.36 segfaults "
        "(ggml_backend_amx_mul_mat) on the bundled Q4_1 model.",
    )


KV_HEADROOM = 256  # tokens of llama.cpp context past a budgeted prompt and its answer (template, a long question)


def llamacpp_prompt_budget(settings: LlamaCppSettings) -> int:
    """Tokens a llama.cpp prompt is fitted to: ``llamacpp_prompt_tokens``, less if the window is small."""
    return min(settings.context_window - settings.max_new_tokens, settings.llamacpp_prompt_tokens)


def llama_context(settings: LlamaCppSettings) -> int:
    """``n_ctx`` for llama.cpp: a budgeted prompt, its answer and `KV_HEADROOM`, in steps of 256,
    at most ``context_window``.

    llama.cpp allocates the KV cache for all ``n_ctx`` tokens up front, whatever the prompts (the
    bundled Qwen: 28 KiB a token, 112 MiB at 4,096), while every prompt is fitted to the prompt
    budget (1,400 tokens by default): 2,048 holds it and 256 answer tokens with room to spare.

    >>> llama_context(LlamaCppSettings()), llama_context(LlamaCppSettings(llamacpp_prompt_tokens=6000))
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

    def __init__(self, settings: LlamaCppSettings) -> None:
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
        self.repack = settings.llamacpp_repack if settings.llamacpp_repack is not None else not cpu_has_amx()
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
            return load_llama(path, self.context_window, self.threads, self.repack, self.draft)
        except ValueError as exc:  # llama_cpp: "Failed to load model from file"
            raise BackendUnavailableError(
                f"llama.cpp cannot load {path.name}: {one_line(exc)}",
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
        msg = one_line(exc)
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
