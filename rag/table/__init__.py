"""Extraction tables: papers side by side, one checked, cited cell per (paper, question).

- `rag.table.columns`: the built-in columns and free-text questions;
- `rag.table.cells`: one cell, asked of one abstract under a JSON grammar, then checked;
- `rag.table.cache`: cells kept in the data home by (paper content, column, model);
- `rag.table.maker`: the rows, the table and its JSON;
- `rag.table.overview`: the sentences above the table;
- `rag.table.export`: Markdown, CSV and rich; `rag.table.terminal`: ``rag table``'s progress and printing;
- `rag.table.requests`: a chat message that asks for a table; `rag.table.chat`: the table it asks for
  (then a turn of the conversation: `rag.chat.Conversation.add_table`).

The names below are imported on first use, so ``rag --help`` (which imports the command) stays
instant. Left out: the other interfaces (``POST /v1/table``, the ``compare_papers`` MCP tool), each a
thin layer over `TableMaker.make`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {"Cell": "cells", "Row": "cells", "BUILTIN": "columns", "Column": "columns", "DEFAULT_COLUMNS": "columns",
          "parse_columns": "columns", "Table": "maker", "TableMaker": "maker"}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'rag.table' has no attribute {name!r}")
    return getattr(import_module(f"rag.table.{_HOMES[name]}"), name)
