"""``rag eval table``: extraction tables scored against a gold table written by hand.

The gold (``data/eval/table-gold.jsonl``, one paper a line) gives, for each built-in column, the
value copied from the abstract with its ``keys`` (the words that make an answer right: a number, a
method's name, a dataset) or ``null`` where the abstract is silent. The table is made over exactly
those papers (`rag.table.maker.TableMaker.rows`, cells cached in the run folder, so a rerun resumes
and the first run is cold), and each cell is scored:

- ``correct``: the gold has a value and the cell shows one that holds one of its keys (whole words,
  any case) or shares at least half of its content words (token F1 >= 0.5); or the gold is silent
  and the cell shows no value (``not stated``, or left empty by the check);
- ``not stated`` precision (cells the model called not stated where the gold is silent) and recall
  (gold-silent cells the model called not stated);
- ``unsupported_shown``: a shown value that the abstract does not hold, re-checked apart from the
  table's own check: a number or name it gives is not in the abstract, or under half of its content
  words are (the target is 0); ``shown_where_silent``: a value shown where the gold is silent;
- ``withheld``: cells the check left empty (the model's value rejected);
- seconds per cell (median, p90), as measured when it was extracted (a cached cell keeps its time, so
  a resumed run reports every cell), and per row.

Ratios get 95% bootstrap CIs over papers (`eval.metrics.ratio_ci`): a paper's cells share an
abstract and are not independent. Left out: making tables (`rag.table`), the gold's curation.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eval.metrics import ratio_ci
from rag.answer.answerer import Answerer
from rag.answer.claims import content_words, holds, numbers_in, specifics, stems
from rag.index.corpus import Paper
from rag.settings import Settings
from rag.table.cache import CellCache
from rag.table.cells import Cell
from rag.table.columns import BUILTIN, Column
from rag.table.maker import TableMaker, model_key

RATIOS = ("cell_accuracy", "value_accuracy", "not_stated_precision", "not_stated_recall", "unsupported_shown_rate")


def load_gold(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def token_f1(a: str, b: str) -> float:
    """F1 of the two texts' stemmed content words.

    >>> round(token_f1("a memory bank of class prototypes", "class prototype memory"), 2)
    0.86
    """
    x, y = stems(content_words(a)), stems(content_words(b))
    common = len(x & y)
    return 0.0 if not common else 2 * common / (len(x) + len(y))


def matches(value: str, gold: dict[str, Any]) -> bool:
    """The shown value answers like the gold: it holds a key, or shares half its words (token F1).

    >>> matches("an average accuracy of 58.2% on math", {"value": "58.2%", "keys": ["58.2"]})
    True
    >>> matches("SMI", {"value": "Diversity-aware Reward Adjustment (DRA)", "keys": ["DRA"]})
    False
    """
    text = value.lower()
    return any(holds(text, key.lower()) for key in gold["keys"]) or token_f1(value, gold["value"]) >= 0.5


def unsupported(value: str, paper: Paper) -> bool:
    """A shown value the abstract does not hold, checked apart from the table's own check."""
    text = f"{paper.title} {paper.abstract}".lower()
    numbers = numbers_in(text)
    if any(not holds(text, fact) and fact not in numbers for fact in specifics(value, "")):
        return True
    words, known = content_words(value), stems(content_words(text))
    found = [w for w in words if holds(text, w) or stems([w]) <= known]  # "11b" is held by "11b-sized"
    return bool(words) and len(found) < 0.5 * len(words)


def score_cell(cell: Cell, gold: dict[str, Any] | None, paper: Paper, column: str) -> dict[str, Any]:
    shown = cell.value is not None
    correct = (shown and matches(cell.value or "", gold)) if gold is not None else not shown
    return {"paper_id": paper.id, "column": column, "gold": gold["value"] if gold else None, "value": cell.value,
            "withheld": cell.withheld, "reason": cell.reason, "evidence": cell.evidence, "correct": correct,
            "gold_stated": gold is not None, "shown": shown, "not_stated": cell.not_stated,
            "unsupported_shown": shown and unsupported(cell.value or "", paper),
            "seconds": round(cell.seconds, 3), "cached": cell.cached}  # a cached cell keeps its extraction time


def summarize(results: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The metrics over scored cells, ratios with CIs over papers, and timings."""
    papers = list(dict.fromkeys(r["paper_id"] for r in results))

    def per_paper(num: Callable[[dict[str, Any]], bool], den: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        n = [sum(1 for r in results if r["paper_id"] == p and den(r) and num(r)) for p in papers]
        d = [sum(1 for r in results if r["paper_id"] == p and den(r)) for p in papers]
        return ratio_ci(n, d)

    def any_cell(_: dict[str, Any]) -> bool:
        return True

    metrics = {
        "cell_accuracy": per_paper(lambda r: r["correct"], any_cell),
        "value_accuracy": per_paper(lambda r: r["correct"], lambda r: r["gold_stated"]),
        "not_stated_precision": per_paper(lambda r: not r["gold_stated"], lambda r: r["not_stated"]),
        "not_stated_recall": per_paper(lambda r: r["not_stated"], lambda r: not r["gold_stated"]),
        "unsupported_shown_rate": per_paper(lambda r: r["unsupported_shown"], lambda r: r["shown"]),
    }
    columns = list(dict.fromkeys(r["column"] for r in results))
    seconds = [r["seconds"] for r in results if r["column"] != "code"]
    row_seconds = [r["seconds"] for r in rows]
    return {
        "cells": len(results), "papers": len(papers), "metrics": metrics,
        "by_column": {c: per_paper(lambda r, c=c: r["correct"] and r["column"] == c,  # type: ignore[misc]
                                   lambda r, c=c: r["column"] == c) for c in columns},  # type: ignore[misc]
        "counts": {"unsupported_shown": sum(r["unsupported_shown"] for r in results),
                   "shown_where_silent": sum(r["shown"] and not r["gold_stated"] for r in results),
                   "withheld": sum(r["withheld"] is not None for r in results),
                   "gold_silent": sum(not r["gold_stated"] for r in results)},
        "timing": {"seconds_per_cell_median": round(statistics.median(seconds), 3) if seconds else None,
                   "seconds_per_cell_p90": round(statistics.quantiles(seconds, n=10)[-1], 3)
                   if len(seconds) >= 10 else None,
                   "timed_cells": len(seconds), "cached_cells": sum(r["cached"] for r in results),
                   "seconds_per_row_median": round(statistics.median(row_seconds), 3) if row_seconds else None},
    }


def evaluate_table(gold_path: Path, settings: Settings, out: Path, columns: Sequence[Column] | None = None,
                   limit: int | None = None, backend: str | None = None,
                   progress: Callable[[int, int], None] | None = None, answerer: Answerer | None = None
                   ) -> dict[str, Any]:
    """Make the table over the gold's papers, score it, write results.jsonl and summary.json in ``out``
    (``answerer``: one already built, e.g. with a scripted backend)."""
    gold = load_gold(gold_path)[:limit]
    columns = list(columns or [BUILTIN[k] for k in gold[0]["cells"]])
    answerer = answerer or Answerer(settings)
    maker = TableMaker(answerer, cache=CellCache(out / "cells.sqlite"))
    papers = maker.answerer.retriever.index().papers
    from rag.library import resolve_paper

    chosen = [resolve_paper(papers, g["paper_id"]) for g in gold]
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    started, load = time.perf_counter(), [round(os.getloadavg()[0], 2)]
    for done, (row, g) in enumerate(zip(maker.rows(chosen, columns, backend), gold), 1):
        rows.append({"paper_id": row.paper.id, "seconds": round(sum(c.seconds for c in row.cells.values()), 3),
                     "cached": all(c.cached for c in row.cells.values())})
        results += [score_cell(row.cells[c.key], g["cells"].get(c.key), row.paper, c.key) for c in columns]
        if progress:
            progress(done, len(gold))
    llm, _ = answerer.backend_for(backend)
    summary = {"gold": str(gold_path), "model": model_key(llm), "columns": [c.key for c in columns],
               "wall_s": round(time.perf_counter() - started, 1),
               "load_average_1min": [*load, round(os.getloadavg()[0], 2)], **summarize(results, rows)}
    (out / "results.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def summary_table(summary: dict[str, Any]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table("metric", "value", "95% CI", "n", title=Text(f"table eval: {summary['model']}, "
                                                             f"{summary['papers']} papers x "
                                                             f"{len(summary['columns'])} columns"))
    for name, m in [*summary["metrics"].items(), *((f"accuracy: {c}", m) for c, m in summary["by_column"].items())]:
        value = "-" if m["value"] is None else f"{m['value']:.3f}"
        ci = "-" if m["ci"][0] is None else f"{m['ci'][0]:.3f}..{m['ci'][1]:.3f}"
        table.add_row(name, value, ci, str(m["n"]))
    for name, count in summary["counts"].items():
        table.add_row(name, str(count), "", "")
    for name, value in summary["timing"].items():
        table.add_row(name, "-" if value is None else str(value), "", "")
    return table


__all__ = ["evaluate_table", "load_gold", "matches", "score_cell", "summarize", "summary_table", "unsupported"]
