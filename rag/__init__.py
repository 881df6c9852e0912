"""paper-rag: cited question answering over research-paper abstracts, locally.

The public API is re-exported lazily so that ``import rag`` stays cheap (no torch,
chromadb or gradio until a name that needs them is used).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Settings": "rag.settings",
    "Paper": "rag.index.corpus",
    "load_paths": "rag.index.loaders",
    "RagError": "rag.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rag' has no attribute {name!r}")
