"""Abstention calibration: sweep the two thresholds of ``Answerer.should_abstain`` on a dataset.

The rule is: abstain when retrieval found nothing, or when the best passage's cosine
(``Confidence.dense_top``) is below ``answer.abstain_threshold`` *and* the top paper covers
less than ``answer.abstain_coverage`` of the question's terms. This module retrieves once
per question (no LLM: seconds), then scores every (threshold, coverage) pair of a grid:
abstention precision, recall and F1 (unanswerable = positive), and the false-abstention rate
on answerable questions. The recommendation maximises F1 subject to false abstentions
<= 5% (ties: fewer false abstentions, then the pair nearest the current settings).

A conversation's later turns are retrieved with the earlier turns' questions prefixed (as
``eval.retrieval.load_questions`` does), an approximation of the chat's condensed query.
Questions with unknown gold (thumbs-down feedback) are left out. Left out: the LLM's own
abstentions ("The provided papers do not answer ..."), which only a full run measures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from eval.metrics import abstention_sweep, recommend

THRESHOLDS = tuple(round(float(x), 2) for x in np.arange(0.0, 0.605, 0.01))
COVERAGES = tuple(round(float(x), 2) for x in np.arange(0.0, 1.001, 0.05))
GRID_ROWS = tuple(round(0.10 + 0.04 * i, 2) for i in range(9))  # the part of the sweep that is printed
GRID_COLS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0)


def collect(dataset: Any, settings: Any, retriever: Any | None = None,
            progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Per question: id, type, unanswerable, has_hits, dense_top, coverage."""
    from rag.search.retrieval import Retriever

    retriever = retriever or Retriever(settings)
    k = settings.answer.max_context_papers
    questions = [q for q in dataset.questions if q.gold is not None]
    out = []
    context: dict[str, str] = {}
    for i, q in enumerate(questions, 1):
        query = (context.get(q.item, "") + " " + q.question).strip() if q.turn > 1 else q.question
        context[q.item] = query
        result = retriever.search(query, k=k)
        out.append({"id": q.id, "type": q.type, "unanswerable": not q.gold, "has_hits": bool(result.hits),
                    "dense_top": round(float(result.confidence.dense_top), 4),
                    "coverage": round(float(result.confidence.coverage), 4)})
        if progress:
            progress(i, len(questions))
    return out


def calibrate(points: list[dict[str, Any]], settings: Any, max_false: float = 0.05,
              thresholds: tuple[float, ...] = THRESHOLDS, coverages: tuple[float, ...] = COVERAGES) -> dict[str, Any]:
    """The sweep over the grid, the current pair's scores and the recommended pair."""
    columns = _columns(points)
    sweep = abstention_sweep(*columns, thresholds, coverages)
    cur = (settings.answer.abstain_threshold, settings.answer.abstain_coverage)
    current = abstention_sweep(*columns, [cur[0]], [cur[1]])[0]
    return {"questions": len(points), "unanswerable": sum(columns[3]), "max_false": max_false,
            "current": current, "recommended": recommend(sweep, max_false, cur), "sweep": sweep, "points": points}


def grid_table(result: dict[str, Any], thresholds: tuple[float, ...] = GRID_ROWS,
               coverages: tuple[float, ...] = GRID_COLS) -> Any:
    """A rich table: rows = abstain_threshold, columns = abstain_coverage, cells = "F1 / false-abstention %"."""
    from rich import box
    from rich.table import Table

    cells = {(r["abstain_threshold"], r["abstain_coverage"]): r for r in result["sweep"]}
    best, cur = result["recommended"], result["current"]
    rows = sorted({*thresholds, *([best["abstain_threshold"]] if best else []), cur["abstain_threshold"]})
    cols = sorted({*coverages, *([best["abstain_coverage"]] if best else []), cur["abstain_coverage"]})
    table = Table("thr\\cov", *[f"{c:.2f}" for c in cols], box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0),
                  title=f"abstention F1/false abstentions: rows abstain_threshold, columns abstain_coverage; "
                        f"{result['questions']} questions ({result['unanswerable']} unanswerable)")
    for t in rows:
        row = []
        for c in cols:
            r = cells.get((t, c)) or abstention_sweep(*_columns(result["points"]), [t], [c])[0]
            text = f"{r['f1']:.2f}/{r['false_abstention_rate']:.0%}"
            if best and (t, c) == (best["abstain_threshold"], best["abstain_coverage"]):
                text = f"[bold green]{text}[/]"
            elif (t, c) == (cur["abstain_threshold"], cur["abstain_coverage"]):
                text = f"[bold yellow]{text}[/]"
            row.append(text)
        table.add_row(f"{t:.2f}", *row)
    return table


def recommendation(result: dict[str, Any]) -> str:
    """The current pair's scores and the recommended pair, as the lines `rag eval calibrate` prints."""
    cur, best = result["current"], result["recommended"]
    lines = [f"current:     abstain_threshold={cur['abstain_threshold']} abstain_coverage={cur['abstain_coverage']}"
             f"  F1 {cur['f1']:.3f}, false abstentions {cur['false_abstention_rate']:.1%}"]
    if best is None:
        lines.append(f"no pair keeps false abstentions <= {result['max_false']:.0%}")
    else:
        lines += [f"recommended: abstain_threshold={best['abstain_threshold']} abstain_coverage="
                  f"{best['abstain_coverage']}  F1 {best['f1']:.3f} (precision {best['precision']:.3f}, recall "
                  f"{best['recall']:.3f}), false abstentions {best['false_abstention_rate']:.1%}",
                  f"  RAG_ANSWER__ABSTAIN_THRESHOLD={best['abstain_threshold']} "
                  f"RAG_ANSWER__ABSTAIN_COVERAGE={best['abstain_coverage']}"]
    return "\n".join(lines)


def _columns(points: list[dict[str, Any]]) -> tuple[list[float], list[float], list[bool], list[bool]]:
    """The sweep's four inputs: dense_top, coverage, has_hits, unanswerable."""
    dense, coverage, hits, unanswerable = ([p[k] for p in points]
                                           for k in ("dense_top", "coverage", "has_hits", "unanswerable"))
    return dense, coverage, hits, unanswerable


__all__ = ["recommendation", "grid_table", "COVERAGES", "THRESHOLDS", "calibrate", "collect"]
