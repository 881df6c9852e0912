"""Extraction tables: papers side by side, one checked, cited cell per (paper, question).

- `rag.table.columns`: the built-in columns and free-text questions;
- `rag.table.cells`: one cell, asked of one abstract under a JSON grammar, then checked;
- `rag.table.cache`: cells kept in the data home by (paper content, column, model);
- `rag.table.maker`: the rows, the table and its JSON;
- `rag.table.overview`: the sentences above the table;
- `rag.table.export`: Markdown, CSV and the terminal.

Left out: the interfaces (``rag table``, ``POST /v1/table``, the ``compare_papers`` MCP tool, the web
chat's Compare action), each a thin layer over `TableMaker.make`.
"""

from rag.table.cells import Cell, Row
from rag.table.columns import BUILTIN, DEFAULT_COLUMNS, Column, parse_columns
from rag.table.maker import Table, TableMaker

__all__ = ["BUILTIN", "Cell", "Column", "DEFAULT_COLUMNS", "Row", "Table", "TableMaker", "parse_columns"]
