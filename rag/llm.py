"""The names the rest of paper-rag imports from the answer backends, in one place: the interface,
the errors, the built-in backends, `make_backend` and `select_backend`.

The backends themselves live in `rag.backends` (one module each, and the registry that finds
built-ins and plug-ins); this module only re-exports them, so a caller imports ``rag.llm`` and
never depends on which module a name lives in. Left out: everything but re-exports.
"""

from __future__ import annotations

from rag.backends.base import (
    CHECK_TIMEOUT_S,
    Backend,
    BackendTimeoutError,
    ContextOverflowError,
    LLMCommon,
    Message,
    ModelNotFoundError,
    StreamInterrupted,
    approx_tokens,
    generates,
    guarded,
    pick,
    served_model,
    spellings,
)
from rag.backends.extractive import ExtractiveBackend
from rag.backends.llama_loader import cpu_has_amx, maps_gguf, no_extra_buffers
from rag.backends.llamacpp import LlamaCppBackend, citation_grammar, llama_context, llamacpp_prompt_budget
from rag.backends.ollama import OllamaBackend
from rag.backends.openai_compat import HTTP_PROMPT_SHARE, OpenAIBackend
from rag.backends.registry import backend_names, make_backend, select_backend, served_models, unknown_backend

__all__ = [
    "CHECK_TIMEOUT_S",
    "HTTP_PROMPT_SHARE",
    "Backend",
    "BackendTimeoutError",
    "ContextOverflowError",
    "ExtractiveBackend",
    "LLMCommon",
    "LlamaCppBackend",
    "Message",
    "ModelNotFoundError",
    "OllamaBackend",
    "OpenAIBackend",
    "StreamInterrupted",
    "approx_tokens",
    "backend_names",
    "citation_grammar",
    "cpu_has_amx",
    "generates",
    "guarded",
    "llama_context",
    "llamacpp_prompt_budget",
    "make_backend",
    "maps_gguf",
    "no_extra_buffers",
    "pick",
    "select_backend",
    "served_model",
    "served_models",
    "spellings",
    "unknown_backend",
]
