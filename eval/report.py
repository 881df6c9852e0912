"""Run folder -> summary.json (aggregates with CIs, counts, provenance) and report.md with PNG plots.

Plots (matplotlib, Agg backend, written beside report.md):

- ``metrics_by_type.png``: grouped bars of the main metrics per question type, with 95% CIs;
- ``latency.png``: histogram of time to first token and total time, and box plots of
  retrieval / first token / total;
- ``abstention.png``: each question's retrieval confidence (best passage cosine vs the top
  paper's coverage of the question's terms), answerable vs unanswerable, with the abstention
  thresholds of the run drawn in: where calibration moves them is visible at a glance.

Left out: asking questions (``eval.run``), comparing runs (``eval.compare``).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eval.metrics import LATENCY, aggregate, by_type
from eval.results import git_commit, read_results

LABELS = {
    "recall@1": "recall@1", "recall@5": "recall@5", "recall@10": "recall@10", "mrr@10": "MRR@10",
    "ndcg@10": "nDCG@10", "answer_match": "expected-string match", "citation_precision": "citation precision",
    "citation_recall": "citation recall", "invalid_citations": "invalid citation numbers per answer",
    "unsupported_rate": "unsupported-sentence rate", "abstention_precision": "abstention precision",
    "abstention_recall": "abstention recall", "abstention_f1": "abstention F1",
    "false_abstention_rate": "false abstentions (answerable)", "precision": "precision (correct / answered)",
    "accuracy": "accuracy (correct / all)", "faithfulness": "faithfulness (judge)",
    "relevancy": "answer relevance (judge)", "shown_unsupported_specifics": "shown unsupported values per answer",
    "language_match": "answer in the question's language", "list_recall": "list recall (which papers)",
    "pair_cited": "both named papers cited (comparison)", "keeps_subject": "follow-up cites the turn before's paper",
}
HEADLINE = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "answer_match", "citation_precision",
            "citation_recall", "invalid_citations", "unsupported_rate", "abstention_precision", "abstention_recall",
            "abstention_f1", "false_abstention_rate", "precision", "accuracy", "shown_unsupported_specifics",
            "language_match", "list_recall", "pair_cited", "keeps_subject", "faithfulness", "relevancy")
BY_TYPE = ("recall@5", "mrr@10", "answer_match", "citation_recall", "accuracy")
PLOTS = ("metrics_by_type.png", "latency.png", "abstention.png")


# ------------------------------------------------------------------ summary.json


def ordered_results(out: Path, dataset: Any | None = None) -> list[dict[str, Any]]:
    """Finished (error-free or not) results of the run, in dataset order when the dataset is given."""
    results = read_results(Path(out) / "results.jsonl")
    if dataset is None:
        return list(results.values())
    return [results[q.id] for q in dataset.questions if q.id in results]


def summarize(out: Path, dataset: Any, settings: Any, manifest: dict[str, Any], *, judge_note: str | None = None,
              workers: int = 1, wall_s: float | None = None, computed: int | None = None) -> dict[str, Any]:
    results = ordered_results(out, dataset)
    ok = [r for r in results if r.get("error") is None and r.get("metrics")]
    rows, types = [r["metrics"] for r in ok], [r["type"] for r in ok]
    answers = [r["answer"] for r in ok]
    models = Counter(f"{a.get('backend')} / {a.get('model')}" for a in answers)
    judged = sum(r["metrics"].get("faithfulness") is not None for r in ok)
    summary = {
        "dataset": manifest["dataset"],
        "backend": settings.llm.backend,
        "models": dict(models),
        "counts": {
            "questions_in_dataset": len(dataset.questions), "finished": len(ok),
            "errors": len(results) - len(ok),
            "answerable": sum(m["answerable"] is True for m in rows),
            "unanswerable": sum(m["answerable"] is False for m in rows),
            "gold_unknown": sum(m["answerable"] is None for m in rows),
            "abstained": sum(bool(m["abstained"]) for m in rows),
            "incomplete": sum(bool(a.get("incomplete")) for a in answers),
            "computed_this_call": computed, "judged": judged,
        },
        "metrics": aggregate(rows),
        "by_type": by_type(rows, types),
        "notes": [
            f"retrieval metrics use the answer's retrieved list, {settings.answer.max_context_papers} papers deep "
            "(answer.max_context_papers): @10 metrics cannot see further",
            "citation precision/recall are over answered answerable questions; abstention is scored separately",
            "95% CIs: percentile bootstrap over questions, 1000 resamples, seed 0 (conversation turns count "
            "as separate questions)",
        ] + ([f"latency measured with {workers} concurrent workers"] if workers > 1 else []),
        "judge": {"spec": manifest.get("judge"), "judged": judged, "note": judge_note},
        "settings": manifest["settings"],
        "workers": workers,
        "wall_s": round(wall_s, 2) if wall_s is not None else None,
        "git": git_commit(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return summary


# ------------------------------------------------------------------ plots


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_by_type(summary: dict[str, Any], path: Path) -> None:
    import numpy as np

    plt = _plt()
    types = list(summary["by_type"])
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(types) + 2), 4.2))
    width = 0.8 / len(BY_TYPE)
    x = np.arange(len(types))
    for i, metric in enumerate(BY_TYPE):
        vals, lo, hi = [], [], []
        for t in types:
            m = summary["by_type"][t]["metrics"].get(metric)
            v = m["value"] if m else np.nan
            vals.append(v)
            lo.append(v - m["ci"][0] if m else 0)
            hi.append(m["ci"][1] - v if m else 0)
        pos = x + (i - (len(BY_TYPE) - 1) / 2) * width
        ax.bar(pos, vals, width, yerr=[lo, hi], capsize=2, label=LABELS.get(metric, metric),
               error_kw={"elinewidth": 0.8, "alpha": 0.6})
        for p, v in zip(pos, vals):
            if v == 0:  # a zero bar is invisible: say it is zero, not missing
                ax.text(p, 0.01, "0", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [f"{t}\n(n={summary['by_type'][t]['n']})" for t in types], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (95% CI)")
    ax.set_title("Metrics by question type (missing bar: not defined for that type)", fontsize=10)
    ax.legend(fontsize=7, ncol=len(BY_TYPE), loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(results: list[dict[str, Any]], path: Path) -> None:
    import numpy as np

    plt = _plt()
    series = {k: [r["metrics"][k] for r in results if r["metrics"].get(k) is not None] for k in LATENCY}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    both = series["total_s"] + series["ttft_s"]
    bins = np.linspace(0, max(both) * 1.02, min(30, max(6, len(both) // 6)) + 1) if both else 10
    for key, colour, label in (("total_s", "tab:blue", "total"), ("ttft_s", "tab:orange", "first token")):
        if series[key]:
            left.hist(series[key], bins=bins, alpha=0.55, color=colour, label=label, histtype="stepfilled")
    left.set_xlabel("seconds")
    left.set_ylabel("questions")
    left.set_title("Latency per question", fontsize=10)
    left.legend(fontsize=8)
    data = [series[k] or [0.0] for k in LATENCY]
    right.boxplot(data, tick_labels=["retrieval", "first token", "total"], showfliers=True)
    right.set_ylabel("seconds")
    right.set_title("median, quartiles, outliers", fontsize=10)
    right.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_abstention(results: list[dict[str, Any]], settings: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    groups = {(True, False): ("answerable, answered", "tab:green", "o"),
              (True, True): ("answerable, abstained (false abstention)", "tab:red", "x"),
              (False, True): ("unanswerable, abstained", "tab:blue", "o"),
              (False, False): ("unanswerable, answered", "tab:purple", "x")}
    for key, (label, colour, marker) in groups.items():
        pts = [(r["answer"]["confidence"]["dense_top"], r["answer"]["confidence"]["coverage"]) for r in results
               if r["answer"].get("confidence") and (r["metrics"]["answerable"], r["metrics"]["abstained"]) == key]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=colour, marker=marker, s=28, alpha=0.75,
                       label=f"{label} ({len(pts)})")
    t, c = settings["answer"]["abstain_threshold"], settings["answer"]["abstain_coverage"]
    ax.axvline(t, color="grey", ls="--", lw=1)
    ax.axhline(c, color="grey", ls="--", lw=1)
    ax.fill_between([0, t], 0, c, color="grey", alpha=0.12, label="abstain region")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("best passage cosine (Confidence.dense_top)")
    ax.set_ylabel("top paper's share of question terms (coverage)")
    ax.set_title(f"Abstention rule: dense_top < {t:.2f} and coverage < {c:.2f}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ report.md


def _fmt(value: float | None, metric: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:.2f}s" if metric.endswith("_s") or ".median" in metric or ".p95" in metric else f"{value:.3f}"


def _cell(metrics: dict[str, Any], metric: str) -> str:
    m = metrics.get(metric)
    return f"{m['value']:.2f}" if m else "–"


def write_report(out: Path, summary: dict[str, Any]) -> Path:
    """report.md and its plots in ``out``, from summary.json's numbers and results.jsonl."""
    out = Path(out)
    results = [r for r in ordered_results(out) if r.get("error") is None and r.get("metrics")]
    order = {q: i for i, q in enumerate(summary["by_type"])}
    results.sort(key=lambda r: (order.get(r["type"], 99), r["id"]))
    if results:
        plot_by_type(summary, out / "metrics_by_type.png")
        plot_latency(results, out / "latency.png")
        plot_abstention(results, summary["settings"], out / "abstention.png")
    c, m = summary["counts"], summary["metrics"]
    git = summary.get("git") or {}
    commit = f"{git['commit'][:10]}{' (uncommitted changes)' if git.get('dirty') else ''}" if git else "unknown"
    lines = [
        f"# Evaluation: {summary['dataset']['name']} — {', '.join(summary['models']) or summary['backend']}",
        "",
        f"{c['finished']} of {c['questions_in_dataset']} questions finished ({c['answerable']} answerable, "
        f"{c['unanswerable']} unanswerable, {c['gold_unknown']} with unknown gold); {c['abstained']} abstained, "
        f"{c['incomplete']} incomplete, {c['errors']} errors. Commit {commit}, {summary['finished_at']}.",
        "",
        "## Headline numbers",
        "",
        "| metric | value | 95% CI | n |",
        "|---|---:|---:|---:|",
    ]
    for key in HEADLINE:
        if key in m:
            lo, hi = m[key]["ci"]
            lines.append(f"| {LABELS[key]} | **{m[key]['value']:.3f}** | {lo:.3f} – {hi:.3f} | {m[key]['n']} |")
    lines += ["", "## By question type", "", "![metrics by question type](metrics_by_type.png)", "",
              "| type | n | recall@5 | MRR@10 | match | cit. precision | cit. recall | abstained | accuracy |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t, group in summary["by_type"].items():
        gm = group["metrics"]
        n_abst = sum(r["metrics"]["abstained"] for r in results if r["type"] == t)
        lines.append(f"| {t} | {group['n']} | {_cell(gm, 'recall@5')} | {_cell(gm, 'mrr@10')} | "
                     f"{_cell(gm, 'answer_match')} | {_cell(gm, 'citation_precision')} | "
                     f"{_cell(gm, 'citation_recall')} | {n_abst} | {_cell(gm, 'accuracy')} |")
    lines += ["", "## Latency", "", "![latency](latency.png)", "", "| | median | p95 |", "|---|---:|---:|"]
    for key, label in zip(LATENCY, ("retrieval", "time to first token", "total")):
        if f"{key}.median" in m:
            med, p95 = m[f"{key}.median"], m[f"{key}.p95"]
            lines.append(f"| {label} | {med['value']:.2f}s ({med['ci'][0]:.2f}–{med['ci'][1]:.2f}) | "
                         f"{p95['value']:.2f}s ({p95['ci'][0]:.2f}–{p95['ci'][1]:.2f}) |")
    answer = summary["settings"]["answer"]
    lines += ["", "## Abstention", "", "![abstention](abstention.png)", "",
              f"Rule: abstain when `dense_top < {answer['abstain_threshold']}` and "
              f"`coverage < {answer['abstain_coverage']}` (`rag eval calibrate DATASET` sweeps both).", "",
              "## LLM judge", ""]
    judge = summary["judge"]
    lines.append(f"Faithfulness and answer relevance: judged {judge['judged']} answers with `{judge['spec']}`."
                 if not judge.get("note") else f"Faithfulness and answer relevance: {judge['note']}.")
    wrong = [r for r in results if r["metrics"].get("correct") is False]
    if wrong:
        lines += ["", f"## Questions scored wrong ({len(wrong)}; first 20)", "",
                  "| id | type | question | answer | why |", "|---|---|---|---|---|"]
        for r in wrong[:20]:
            lines.append(f"| {r['id']} | {r['type']} | {_md(r['question'], 90)} | {_md(r['answer']['answer'], 120)} "
                         f"| {_why(r)} |")
    lines += ["", "## Notes", "", *[f"- {n}" for n in summary["notes"]],
              f"- backend setting `{summary['backend']}`; workers {summary['workers']}; "
              f"this call computed {c['computed_this_call']} questions in {summary['wall_s']}s",
              "- everything per question is in `results.jsonl`; aggregates and settings in `summary.json`", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def summary_table(summary: dict[str, Any]) -> Any:
    """A rich table of the headline numbers and latency, for the terminal."""
    from rich.table import Table

    m, c = summary["metrics"], summary["counts"]
    from rich.text import Text

    table = Table("metric", "value", "95% CI", "n", title=Text(f"{summary['dataset']['name']}: {c['finished']} "
                  f"questions, {', '.join(summary['models']) or summary['backend']}"))  # Text: names are not markup
    for key in HEADLINE:
        if key in m:
            table.add_row(LABELS[key], f"{m[key]['value']:.3f}", f"{m[key]['ci'][0]:.3f} – {m[key]['ci'][1]:.3f}",
                          str(m[key]["n"]))
    for key, label in zip(LATENCY, ("retrieval", "first token", "total")):
        for stat in ("median", "p95"):
            if f"{key}.{stat}" in m:
                v = m[f"{key}.{stat}"]
                table.add_row(f"{label} {stat}", f"{v['value']:.2f}s", f"{v['ci'][0]:.2f} – {v['ci'][1]:.2f}",
                              str(v["n"]))
    return table


def _md(text: str, limit: int) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _why(r: dict[str, Any]) -> str:
    mt = r["metrics"]
    if mt["answerable"] is False:
        return "answered an unanswerable question"
    if mt["abstained"]:
        return "abstained"
    if r["answers"]:
        return "expected string missing" + ("" if mt["cites_gold"] else "; no gold paper cited")
    return "no gold paper cited"


__all__ = ["summary_table", "summarize", "write_report", "ordered_results", "plot_by_type", "plot_latency",
           "plot_abstention", "PLOTS"]
