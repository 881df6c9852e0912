"""The process environment paper-rag's dependencies read, set by explicit calls, never at import.

Hugging Face libraries read ``HF_HUB_OFFLINE`` and friends when they are first imported, Chroma
servers started from a command read ``ANONYMIZED_TELEMETRY``, Gradio reads
``GRADIO_ANALYTICS_ENABLED`` when it launches. `set_defaults` fills the ones the user left
unset (a variable already set is kept, whatever its value). Called by the entry points (the
``rag`` command, the web server) and by the functions that load a Hugging Face model, so importing
any paper-rag module leaves ``os.environ`` as it was.

    >>> env = {"HF_HUB_OFFLINE": "0"}
    >>> set_defaults({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}, env)
    {'TRANSFORMERS_OFFLINE': '1'}
    >>> env
    {'HF_HUB_OFFLINE': '0', 'TRANSFORMERS_OFFLINE': '1'}

The XDG base directories that paper-rag's own files default to (`default_home`, `default_cache`)
are read here too, for `rag.settings` and the backends' settings blocks (`rag.backends`) alike.

Left out: paper-rag's own ``RAG_*`` settings (`rag.settings`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

HUGGING_FACE = {
    "HF_HUB_OFFLINE": "1",  # models come from packages or local folders, never from a hub
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",  # no fork warnings; paper-rag runs its own tokenizer threads
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
}
CHROMA = {"ANONYMIZED_TELEMETRY": "False"}  # in-process clients also pass anonymized_telemetry=False
GRADIO = {"GRADIO_ANALYTICS_ENABLED": "False"}  # no calls home from a local-first app
COMMANDS = {**HUGGING_FACE, **CHROMA}  # what the rag command sets before running any subcommand


def set_defaults(defaults: Mapping[str, str], environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set each of ``defaults`` that ``environ`` (default ``os.environ``) lacks; returns what it set."""
    environ = os.environ if environ is None else environ
    added = {name: value for name, value in defaults.items() if name not in environ}
    environ.update(added)
    return added


def _xdg(variable: str, fallback: str) -> Path:
    """``$variable/paper-rag``, else ``~/fallback/paper-rag`` (the XDG base-directory rule)."""
    return Path(os.environ.get(variable) or Path.home() / fallback) / "paper-rag"


def default_home() -> Path:
    """``$XDG_DATA_HOME/paper-rag``, else ``~/.local/share/paper-rag``."""
    return _xdg("XDG_DATA_HOME", ".local/share")


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/paper-rag``, else ``~/.cache/paper-rag``."""
    return _xdg("XDG_CACHE_HOME", ".cache")


__all__ = ["CHROMA", "COMMANDS", "GRADIO", "HUGGING_FACE", "default_cache", "default_home", "set_defaults"]
