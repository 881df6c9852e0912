"""Which backends exist, making one by name, and choosing the one that answers.

The built-in backends and those of installed plug-ins are found the same way: a name and a
``module:attribute`` naming a factory that takes the ``llm`` settings (`rag.settings.LLMSettings`)
and returns a `rag.backends.base.Backend`, usually the backend's class. A package adds a backend
without touching paper-rag by declaring an entry point in the `GROUP` group (simonw/llm's plugin
hook, as ``paper_rag.commands`` adds commands to ``rag``)::

    [project.entry-points."paper_rag.backends"]
    echo = "paper_rag_echo:EchoBackend"

Then ``RAG_LLM__BACKEND=echo``, ``rag ask --backend echo``, the web chat's backend menu, the API's
``model: "echo"`` and MCP all answer with it. Nothing is imported until a backend is made; a
plug-in that fails to load is a `BackendUnavailableError` naming it and its package, and a plug-in
named like a built-in is ignored.

- `select_backend` (``auto``): a bundled model name or GGUF path in ``model`` goes straight to
  llama.cpp; otherwise Ollama if it answers and has the model; else the best installed bundled
  model (never SmolLM2, which answers worse than quoting: eval/README.md); else the extractive
  backend. An explicit backend is made and checked; its ``BackendUnavailableError`` propagates.

Left out: the backends themselves (one module each beside this one) and their settings blocks.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from rag import models
from rag.backends.base import CHECK_TIMEOUT_S, Backend, LLMCommon, ModelNotFoundError, one_line
from rag.errors import BackendUnavailableError, InputError, nearest

__all__ = ["AUTO", "BUILT_IN", "GROUP", "backend_names", "make_backend", "select_backend", "served_models",
           "unknown_backend"]

log = logging.getLogger(__name__)
GROUP = "paper_rag.backends"
AUTO = "auto"  # not a backend: the rule `select_backend` follows
BUILT_IN: dict[str, str] = {
    "ollama": "rag.backends.ollama:OllamaBackend",
    "openai": "rag.backends.openai_compat:OpenAIBackend",
    "llamacpp": "rag.backends.llamacpp:LlamaCppBackend",
    "extractive": "rag.backends.extractive:ExtractiveBackend",
}
Factory = Callable[[Any], Backend]


def plugins() -> dict[str, EntryPoint]:
    """The installed plug-ins' backends by name (read from package metadata on every call: cheap,
    and a package installed while the process runs is seen)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in BUILT_IN or ep.name == AUTO:
            log.warning("backend plug-in %r (%s) is named like a built-in backend: ignored", ep.name, ep.value)
        else:
            found.setdefault(ep.name, ep)
    return found


def backend_names() -> tuple[str, ...]:
    """``auto``, the built-in backends, then the installed plug-ins' (sorted): what ``llm.backend`` accepts.

    >>> backend_names()[:5]
    ('auto', 'ollama', 'openai', 'llamacpp', 'extractive')
    """
    return (AUTO, *BUILT_IN, *sorted(plugins()))


def unknown_backend(name: str) -> str | None:
    """None for a backend name the registry knows; else the problem, with the nearest known name.

    >>> unknown_backend("llamacpp") is None, unknown_backend("olama")
    (True, "unknown LLM backend 'olama' (did you mean 'ollama'?)")
    """
    if name == AUTO or name in BUILT_IN:
        return None  # the common case reads no package metadata
    known = backend_names()
    if name in known:
        return None
    near = nearest(name, known)
    return f"unknown LLM backend {name!r}" + (f" (did you mean {near!r}?)" if near else "")


def _factory(name: str) -> Factory:
    if name in BUILT_IN:
        module, _, attribute = BUILT_IN[name].partition(":")
        return getattr(importlib.import_module(module), attribute)
    ep = plugins().get(name)
    if ep is None:
        raise InputError(unknown_backend(name) or f"unknown LLM backend {name!r}",
                         f"use one of {', '.join(backend_names())} (RAG_LLM__BACKEND, --backend)", param="backend")
    package = ep.dist.name if ep.dist else "its package"
    try:
        return ep.load()
    except Exception as exc:  # noqa: BLE001 - any failure in someone else's import is reported, not raised
        raise BackendUnavailableError(
            f"backend plug-in {name!r} ({ep.value}, from {package}) failed to load: "
            f"{type(exc).__name__}: {one_line(exc)}",
            f"reinstall or upgrade {package}, or choose another backend") from exc


def make_backend(name: str, settings: LLMCommon) -> Backend:
    """The backend called ``name`` (see `backend_names`; not ``auto``), configured but not checked."""
    if name == AUTO:
        raise InputError("'auto' is a rule, not a backend", "use select_backend, or name a backend", param="backend")
    backend = _factory(name)(settings)
    if name not in BUILT_IN and not isinstance(backend, Backend):
        missing = [m for m in ("name", "model", "context_window", "capable", "prompt_budget", "describe", "stream",
                               "choose", "structured", "count_tokens", "check") if not hasattr(backend, m)]
        raise BackendUnavailableError(
            f"backend plug-in {name!r} made a {type(backend).__name__}, which lacks {', '.join(missing)}",
            "the plug-in must return a rag.backends.base.Backend; upgrade it or choose another backend")
    return backend


def served_models(settings: Any, timeout_s: float = CHECK_TIMEOUT_S) -> set[str]:
    """The model names the configured Ollama and OpenAI-compatible servers list now (Ollama's
    with and without their implicit ``:latest``); a server that does not answer lists none.
    ``settings``: the ``llm`` settings (both servers' blocks)."""
    names: set[str] = set()
    for name in ("ollama", "openai"):
        backend = make_backend(name, settings)
        try:
            names |= backend.listed(timeout_s)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - down or not that kind of server: it serves nothing
            log.debug("no model list from %s: %s", backend.describe(), exc)
    return names


def select_backend(settings: LLMCommon) -> tuple[Backend, list[str]]:
    """The backend that will answer, and human lines saying why (module docstring: ``auto``)."""
    if settings.backend == "extractive":
        return make_backend("extractive", settings), [
            "answering extractively (RAG_LLM__BACKEND=extractive): sentences quoted from the abstracts"]
    if settings.backend == AUTO and models.is_local_model(settings.model):
        settings = settings.model_copy(update={"backend": "llamacpp"})
    if settings.backend != AUTO:
        backend = make_backend(settings.backend, settings)
        backend.check()
        return backend, [f"answering with {backend.describe()}"]

    ollama = make_backend("ollama", settings)
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
        local = make_backend("llamacpp", settings)
        local.check()
    except BackendUnavailableError as exc:
        return make_backend("extractive", settings), [
            f"{reason}: {advice}",
            f"no bundled model available ({exc}): answering extractively; {exc.fix} for generated answers",
        ]
    return local, [f"answering with {local.describe()} ({reason}; {advice})"]  # information first: it works
