"""Two runs -> per-metric deltas on the questions both answered, with a paired significance test.

For each per-question metric (only questions where both runs define it):

- binary metrics (every value 0 or 1: expected-string match, correct, cites a gold paper,
  abstained on an unanswerable / an answerable question, recall@1 with one gold paper):
  McNemar's exact test, i.e. a two-sided binomial test on the discordant pairs (scipy);
- the others (MRR, nDCG, citation precision/recall, unsupported rate, latency, ...): a paired
  sign-flip permutation test on the per-question differences (10,000 permutations, seed 0).

The delta is mean(B) - mean(A), with a 95% paired-bootstrap CI (1000 resamples, seed 0).
Also reported: the settings that differ between the runs, and the questions that flipped (a yes/no
metric right in one run and wrong in the other), worse first. ``compare.png`` draws the deltas;
``compare.json`` holds everything.
Left out: multiple-comparison correction (read many p-values with that in mind) and runs
of different datasets (only shared question ids are compared, and their count is shown).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from eval.results import read_results
from rag.errors import InputError

QUALITY = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "answer_match", "cites_gold",
           "citation_precision", "citation_recall", "invalid_citations", "unsupported_rate",
           "abstained_unanswerable", "abstained_answerable", "correct", "faithfulness", "relevancy")
LATENCY = ("retrieval_s", "ttft_s", "total_s")
LOWER_IS_BETTER = {"invalid_citations", "unsupported_rate", "abstained_answerable", *LATENCY}
LABELS = {"abstained_unanswerable": "abstained | unanswerable", "abstained_answerable": "abstained | answerable",
          "cites_gold": "cites a gold paper", "answer_match": "expected-string match", "correct": "correct",
          "citation_precision": "citation precision", "citation_recall": "citation recall",
          "invalid_citations": "invalid citation numbers", "unsupported_rate": "unsupported-sentence rate",
          "faithfulness": "faithfulness (judge)", "relevancy": "answer relevance (judge)", "retrieval_s": "retrieval",
          "ttft_s": "time to first token", "total_s": "total time"}
SEED, RESAMPLES, PERMUTATIONS = 0, 1000, 10_000


def load_run(folder: Path) -> dict[str, dict[str, Any]]:
    """{question id: result line} of a run folder's finished questions."""
    path = Path(folder) / "results.jsonl"
    if not path.exists():
        raise InputError(f"{folder} is not a run folder (no results.jsonl)", "give folders made by `rag eval run`")
    return {k: r for k, r in read_results(path).items() if r.get("error") is None and r.get("metrics")}


def per_question(result: dict[str, Any], metric: str) -> float | None:
    m = result["metrics"]
    if metric == "abstained_unanswerable":
        return float(m["abstained"]) if m["answerable"] is False else None
    if metric == "abstained_answerable":
        return float(m["abstained"]) if m["answerable"] is True else None
    value = m.get(metric)
    return None if value is None else float(value)


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes.

    >>> round(mcnemar_exact(np.array([1, 1, 1, 1, 1, 0]), np.array([0, 0, 0, 0, 0, 0])), 4)
    0.0625
    """
    from scipy.stats import binomtest

    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue)


def permutation_test(diff: np.ndarray, permutations: int = PERMUTATIONS, seed: int = SEED) -> float:
    """Two-sided paired sign-flip permutation p-value of mean(diff) != 0 (add-one smoothed)."""
    if not np.any(diff):
        return 1.0
    observed = abs(diff.mean())
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(permutations, diff.size))
    extreme = (np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).sum()
    return float((extreme + 1) / (permutations + 1))


def paired_ci(diff: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> list[float]:
    idx = np.random.default_rng(seed).integers(0, diff.size, size=(resamples, diff.size))
    lo, hi = np.percentile(diff[idx].mean(axis=1), [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def compare_runs(a: Path, b: Path) -> dict[str, Any]:
    from eval.run import diff_records

    run_a, run_b = load_run(a), load_run(b)
    shared = [q for q in run_a if q in run_b]
    if not shared:
        raise InputError(f"{a} and {b} share no finished question ids", "compare runs of the same dataset")
    rows = []
    for metric in (*QUALITY, *LATENCY):
        pairs = [(per_question(run_a[q], metric), per_question(run_b[q], metric)) for q in shared]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        if not pairs:
            continue
        xa, xb = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        diff = xb - xa
        binary = bool(np.isin(xa, (0.0, 1.0)).all() and np.isin(xb, (0.0, 1.0)).all()) and metric not in LATENCY
        p = mcnemar_exact(xa, xb) if binary else permutation_test(diff)
        delta = float(diff.mean())
        better = None
        if p < 0.05 and delta:
            better = "B" if (delta > 0) != (metric in LOWER_IS_BETTER) else "A"
        rows.append({"metric": metric, "n": len(pairs), "a": round(float(xa.mean()), 4),
                     "b": round(float(xb.mean()), 4), "delta": round(delta, 4), "ci": paired_ci(diff),
                     "p": float(f"{p:.3g}"), "test": "McNemar exact" if binary else "paired permutation",
                     "better": better})
    settings = [json.loads((Path(x) / "run.json").read_text()).get("settings") if (Path(x) / "run.json").exists()
                else None for x in (a, b)]
    return {"a": str(a), "b": str(b), "shared": len(shared), "only_a": len(run_a) - len(shared),
            "only_b": sum(q not in run_a for q in run_b), "metrics": rows,
            "flipped": flipped_questions(run_a, run_b, shared),
            "settings_diff": diff_records(settings[0], settings[1], labels=("in A", "in B")) if all(settings) else []}


def flipped_questions(run_a: dict[str, dict[str, Any]], run_b: dict[str, dict[str, Any]],
                      shared: list[str]) -> list[dict[str, Any]]:
    """The shared questions whose outcome on a yes/no quality metric differs between the runs:
    ``{"id", "question", "better": [metrics B got right and A not], "worse": [the reverse]}``,
    questions that got worse first (what a change broke is what a reader looks for).

    >>> r = lambda correct: {"question": "Q?", "metrics": {"correct": correct, "answerable": True, "abstained": 0}}
    >>> flipped_questions({"q1": r(1), "q2": r(0)}, {"q1": r(0), "q2": r(0)}, ["q1", "q2"])
    [{'id': 'q1', 'question': 'Q?', 'better': [], 'worse': ['correct']}]
    """
    out = []
    for q in shared:
        better: list[str] = []
        worse: list[str] = []
        for metric in QUALITY:
            x, y = per_question(run_a[q], metric), per_question(run_b[q], metric)
            if x is None or y is None or x == y or {x, y} - {0.0, 1.0}:
                continue
            (better if (y > x) != (metric in LOWER_IS_BETTER) else worse).append(metric)
        if better or worse:
            out.append({"id": q, "question": run_b[q].get("question") or run_a[q].get("question") or "",
                        "better": better, "worse": worse})
    return sorted(out, key=lambda f: (not f["worse"], f["id"]))


def plot_comparison(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = [r for r in result["metrics"] if r["metric"] in QUALITY]
    latency = [r for r in result["metrics"] if r["metric"] in LATENCY]
    fig, axes = plt.subplots(1, 2, figsize=(11, max(3.5, 0.32 * len(quality) + 1.2)),
                             gridspec_kw={"width_ratios": [3, 2]})
    for ax, rows, unit in ((axes[0], quality, "score"), (axes[1], latency, "seconds")):
        if not rows:
            ax.set_axis_off()
            continue
        y = np.arange(len(rows))[::-1]
        deltas = [r["delta"] for r in rows]
        err = [[r["delta"] - r["ci"][0] for r in rows], [r["ci"][1] - r["delta"] for r in rows]]
        colours = ["tab:green" if r["better"] == "B" else "tab:red" if r["better"] == "A" else "tab:grey"
                   for r in rows]
        ax.barh(y, deltas, xerr=err, color=colours, alpha=0.8, capsize=2)
        ticks = [f"{LABELS.get(r['metric'], r['metric'])} (n={r['n']}, p{'' if r['p'] < 0.001 else '='}{_p(r['p'])})"
                 for r in rows]
        ax.set_yticks(y, ticks, fontsize=7)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(f"B − A ({unit}), 95% CI")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"B = {Path(result['b']).name}  vs  A = {Path(result['a']).name}  ({result['shared']} shared "
                 "questions; green: B better, red: A better, p < 0.05)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_comparison(a: Path, b: Path, out: Path | None = None) -> tuple[dict[str, Any], Path]:
    """compare.png (and compare.json beside it) in B's folder, or at ``out`` (a .png path or a folder)."""
    result = compare_runs(a, b)
    target = Path(out) if out else Path(b) / "compare.png"
    if target.suffix.lower() != ".png":
        target = target / "compare.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    plot_comparison(result, target)
    target.with_suffix(".json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result, target


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def comparison_table(result: dict[str, Any]) -> Any:
    """A rich table that fits 80 columns: metric, A, B, delta with CI, p, n, which run is better
    (p < 0.05); the test each p comes from is in the caption. Numbers never wrap; long metric
    names do."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1),
                  title=Text(f"A = {result['a']}\nB = {result['b']}\n{result['shared']} shared questions"),
                  caption="p: McNemar exact test for yes/no metrics, paired permutation test for the others; "
                          "better: the run ahead at p < 0.05")
    table.add_column("metric", overflow="fold", min_width=12)
    for name in ("A", "B", "B − A", "95% CI", "p", "n", "better"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in result["metrics"]:
        unit = "s" if r["metric"] in LATENCY else ""
        table.add_row(LABELS.get(r["metric"], r["metric"]), f"{r['a']:.3f}{unit}", f"{r['b']:.3f}{unit}",
                      f"{r['delta']:+.3f}", f"{r['ci'][0]:+.3f}..{r['ci'][1]:+.3f}", _p(r["p"]), str(r["n"]),
                      r["better"] or "")
    return table


def flipped_lines(result: dict[str, Any], limit: int = 40) -> list[str]:
    """One line per flipped question for the terminal: ``- id: metrics (question)``, worse first;
    ``+`` marks B better. The whole list is in compare.json."""
    flips = result.get("flipped") or []
    if not flips:
        return ["no question flipped between the runs"]
    worse, better = sum(bool(f["worse"]) for f in flips), sum(bool(f["better"]) for f in flips)
    lines = [f"{len(flips)} questions flipped: {worse} worse in B, {better} better in B"]
    for f in flips[:limit]:
        marks = [f"-{LABELS.get(m, m)}" for m in f["worse"]] + [f"+{LABELS.get(m, m)}" for m in f["better"]]
        lines.append(f"{'-' if f['worse'] else '+'} {f['id']}: {', '.join(marks)}  ({f['question'][:70]})")
    if len(flips) > limit:
        lines.append(f"... and {len(flips) - limit} more (compare.json has them all)")
    return lines


__all__ = ["comparison_table", "compare_runs", "flipped_lines", "flipped_questions",
           "write_comparison", "plot_comparison", "mcnemar_exact",
           "permutation_test", "paired_ci", "load_run"]
