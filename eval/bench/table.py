"""Benchmark: an extraction table of 10 papers x 5 columns with the bundled model, cold then cached.

The papers are the first ten of the gold table (`rag.bundled.TABLE_GOLD`), the columns task, method,
data, result and model_size (each asked of the model; ``code`` would be free). Cold: a fresh cell
cache, the model already loaded (its load is `eval.bench.llm`'s figure), so the time is extraction
and checks; cached: the same table again. Targets (issue 25): at most 3 s per cell (median), 2 min
for the cold table, 1 s for the cached one.

    rag bench --only table [--json]

Left out: cell quality (``rag eval table``), HTTP backends.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.bench.figures import Log, fmt_s, loadavg, table_row, verdict
from rag.bundled import TABLE_GOLD, bundled_file
from rag.settings import Settings

ROWS, COLUMNS = 10, ("task", "method", "data", "result", "model_size")
CELL_TARGET_S, COLD_TARGET_S, CACHED_TARGET_S = 3.0, 120.0, 1.0


def bench_table(home: Path, log: Log | None = None, settings: Callable[[Path], Settings] | None = None,
                answerer: Any | None = None, rows: int = ROWS, gold: Path | None = None) -> dict[str, Any]:
    """``rag bench``'s table step (see the module docstring); ``answerer`` replaces the bundled model's,
    ``gold`` the gold table whose first ``rows`` papers are the rows."""
    import json

    from rag.answer.answerer import Answerer
    from rag.table.cache import CellCache
    from rag.table.columns import parse_columns
    from rag.table.maker import TableMaker

    log = log or (lambda _m: None)
    base = settings(home) if settings else Settings(home=home)
    base = base.model_copy(update={"llm": base.llm.model_copy(update={"backend": "llamacpp"})})
    answerer = answerer or Answerer(base)
    answerer.backend_for()[0].check()  # the model loads outside the timing
    lines = (gold or bundled_file(TABLE_GOLD)).read_text().splitlines()[:rows]
    ids = [json.loads(line)["paper_id"] for line in lines]
    columns = parse_columns(",".join(COLUMNS))
    with tempfile.TemporaryDirectory() as tmp:
        maker = TableMaker(answerer, cache=CellCache(Path(tmp) / "cells.sqlite"))
        load = [loadavg()]
        log(f"cold table: {len(ids)} papers x {len(columns)} columns")
        t0 = time.perf_counter()
        cold = maker.make(paper_ids=ids, columns=columns, on_row=lambda r: log(f"row {r.number}/{len(ids)}"))
        cold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        maker.make(paper_ids=ids, columns=columns)
        cached_s = time.perf_counter() - t0
        load.append(loadavg())
    cells = [c.seconds for r in cold.rows for c in r.cells.values()]
    per_cell = statistics.median(cells)
    first = [r.cells[columns[0].key].seconds for r in cold.rows]  # each row's first cell pays for its abstract
    rest = [c.seconds for r in cold.rows for k, c in r.cells.items() if k != columns[0].key]
    figures = {"papers": len(ids), "columns": len(columns), "cold_s": round(cold_s, 2), "cached_s": round(cached_s, 3),
               "seconds_per_cell_median": round(per_cell, 3),
               "first_cell_of_row_median_s": round(statistics.median(first), 3),
               "other_cells_median_s": round(statistics.median(rest), 3), "load_average": load, "model": cold.model}
    return {"table": figures, "ours": per_cell, "target": CELL_TARGET_S, "rows": [
        table_row("table: seconds per cell, median (cold)", fmt_s(per_cell), "-", None, f"<= {CELL_TARGET_S:g} s",
                  verdict(per_cell, CELL_TARGET_S)),
        table_row(f"table: {len(ids)} x {len(columns)} cold", fmt_s(cold_s), "-", None, f"<= {COLD_TARGET_S:g} s",
                  verdict(cold_s, COLD_TARGET_S)),
        table_row(f"table: {len(ids)} x {len(columns)} cached", fmt_s(cached_s), fmt_s(cold_s), cached_s / cold_s,
                  f"<= {CACHED_TARGET_S:g} s", verdict(cached_s, CACHED_TARGET_S)),
    ]}


__all__ = ["bench_table"]
