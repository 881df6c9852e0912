"""The evaluation commands of ``rag``: ``eval run|compare|rescore|context|calibrate|retrieval|table`` and ``bench``.

`register_commands` adds them to the ``rag`` typer app. ``rag.cli`` calls it through the
``paper_rag.commands`` entry point (pyproject.toml), so the core library never imports ``eval``.
Each command imports its module when it runs, so ``rag --help`` stays instant. Left out: the
runs, metrics and measurements themselves (`eval.run`, `eval.metrics`, `eval.bench`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rag.cli_options import BackendOpt, ModelOpt, settings
from rag.cli_output import console, emit_json, out

eval_app = typer.Typer(help="Batch evaluation.", no_args_is_help=True)


@eval_app.command("run")
def eval_run(
    dataset: Annotated[str, typer.Argument(help="dev, title-abstract, or a JSON Lines file (questions, feedback).")],
    backend: BackendOpt = None,
    config: Annotated[Path | None, typer.Option(help="JSON or TOML file of Settings overrides.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/DATASET-BACKEND); "
                                                              "rerunning into it resumes.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Questions answered at once.")] = 1,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N questions or conversations.")] = None,
    judge: Annotated[str | None, typer.Option(help="LLM judge: ollama:MODEL or openai:MODEL@URL.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print summary.json.")] = False,
) -> None:
    """Answer and score a dataset: results.jsonl, summary.json and report.md with plots (resumable)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from eval.report import summary_table
    from eval.run import evaluate

    columns = [TextColumn(f"eval {dataset}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("eval", total=None)
        outcome = evaluate(dataset, backend=backend, config=config, out=out_dir, workers=workers, limit=limit,
                           judge=judge, progress=lambda done, total: progress.update(task, completed=done, total=total))
    if as_json:
        emit_json(outcome.summary)
        return
    out.print(summary_table(outcome.summary))
    console.print(f"{outcome.computed} questions computed, {outcome.skipped} already done, {outcome.errors} errors; "
                  f"wrote {outcome.out}/results.jsonl, summary.json, report.md", markup=False, highlight=False)
    if outcome.summary["judge"]["note"]:
        console.print(f"note: {outcome.summary['judge']['note']}", markup=False, highlight=False)


@eval_app.command("compare")
def eval_compare(
    run_a: Annotated[Path, typer.Argument(help="Run folder A (the baseline).")],
    run_b: Annotated[Path, typer.Argument(help="Run folder B.")],
    out_path: Annotated[Path | None, typer.Option("--out", help="Plot path (default B/compare.png).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Per-metric deltas B - A on shared questions, with paired significance tests and a plot, then the
    questions that flipped between the runs (all of them in compare.json)."""
    from eval.compare import comparison_table, flipped_lines, write_comparison

    result, plot = write_comparison(run_a, run_b, out_path)
    if as_json:
        emit_json(result)
        return
    out.print(comparison_table(result))
    out.print("\n".join(flipped_lines(result)), markup=False, highlight=False)
    for line in result["settings_diff"]:
        console.print(f"settings differ: {line}", markup=False, highlight=False)
    console.print(f"wrote {plot}", markup=False, highlight=False)


@eval_app.command("rescore")
def eval_rescore(
    run: Annotated[Path, typer.Argument(help="A run folder written by `rag eval run`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="The new run folder.")],
    config: Annotated[Path | None, typer.Option(help="JSON or TOML file of Settings overrides.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print summary.json.")] = False,
) -> None:
    """Re-check a run's recorded answers with the current answer checks (no LLM): a new run folder."""
    from eval.report import summary_table
    from eval.rescore import rescore_run
    from rag.settings import load_settings

    outcome = rescore_run(run, out_dir, load_settings(config))
    if as_json:
        emit_json(outcome.summary)
        return
    out.print(summary_table(outcome.summary))
    console.print(f"{outcome.computed} answers re-checked; wrote {outcome.out}", markup=False, highlight=False)


@eval_app.command("context")
def eval_context(
    dataset: Annotated[str, typer.Argument(help="dev or a JSON Lines question set with gold papers.")],
    budgets: Annotated[str, typer.Option(help="Prompt budgets (tokens) to compare.")] = "600,800,1000,1400",
    config: Annotated[Path | None, typer.Option(help="JSON or TOML file of Settings overrides.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the sweep as JSON.")] = False,
) -> None:
    """What each prompt budget keeps: prompt tokens, gold papers and expected strings in the prompt (no LLM)."""
    from rich.table import Table
    from rich.text import Text

    from eval.context import context_sweep
    from eval.datasets import load_dataset
    from rag.settings import load_settings

    cfg = load_settings(config)
    sizes = [int(b) for b in budgets.split(",") if b.strip()]
    result = context_sweep(load_dataset(dataset, cfg), cfg, sizes)
    if as_json:
        emit_json(result)
        return
    table = Table("budget", "tokens median", "tokens p90", "a gold paper", "every gold paper", "an expected string",
                  title=Text(f"prompt budget on {result['dataset']} ({result['tokenizer']} tokens)"))
    for r in result["budgets"]:
        table.add_row(str(r["budget"]), f"{r['tokens_median']:.0f}", f"{r['tokens_p90']:.0f}",
                      f"{r['gold_in_prompt']:.3f}", f"{r['all_gold_in_prompt']:.3f}",
                      "-" if r["answer_in_prompt"] is None else f"{r['answer_in_prompt']:.3f}")
    out.print(table)


@eval_app.command("calibrate")
def eval_calibrate(
    dataset: Annotated[str, typer.Argument(help="dev or a JSON Lines file with unanswerable questions (gold []).")],
    config: Annotated[Path | None, typer.Option(help="JSON or TOML file of Settings overrides.")] = None,
    max_false: Annotated[float, typer.Option(help="Largest false-abstention rate allowed.")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print the sweep as JSON.")] = False,
) -> None:
    """Sweep the abstention thresholds on retrieval confidences (no LLM) and recommend a pair."""
    from eval.calibrate import calibrate, collect, grid_table, recommendation
    from eval.datasets import load_dataset
    from rag.settings import load_settings

    cfg = load_settings(config)
    result = calibrate(collect(load_dataset(dataset, cfg), cfg), cfg, max_false=max_false)
    if as_json:
        emit_json(result)
        return
    out.print(grid_table(result))
    out.print(recommendation(result), markup=False, highlight=False)


@eval_app.command("retrieval")
def eval_retrieval(
    dataset: Annotated[Path | None, typer.Option(help="A question set with gold paper ids; "
                                                      "default: the title -> abstract task.",
                                                 exists=True, dir_okay=False)] = None,
    corpus: Annotated[list[Path] | None, typer.Option(help="Corpus for the title task.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON keyed by method.")] = False,
) -> None:
    """Recall@k, MRR@10 and nDCG@10 for dense, lexical and hybrid retrieval side by side."""
    from eval.retrieval import evaluate_dataset, evaluate_title_task
    from rag.bundled import CORPUS, bundled_file

    if dataset is None:
        scores = evaluate_title_task(corpus or [bundled_file(CORPUS)], settings())
    else:
        scores = evaluate_dataset(dataset, settings())
    if as_json:
        emit_json(scores)
        return
    from rich.table import Table

    metrics = list(next(iter(scores.values())))
    from rich.text import Text

    table = Table("method", *metrics, title=Text(f"retrieval: {dataset or 'title -> abstract'}"))
    for method, values in scores.items():
        table.add_row(Text(method), *(f"{values[m]:.4f}" for m in metrics))
    out.print(table)


@eval_app.command("table")
def eval_table(
    gold: Annotated[Path | None, typer.Argument(help="A gold table (JSON Lines); default data/eval/table-gold.jsonl.",
                                                exists=True, dir_okay=False)] = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    columns: Annotated[str | None, typer.Option(help="Only these built-in columns (comma-separated).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/table-MODEL); its cell "
                                                              "cache makes a rerun resume.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N papers.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print summary.json.")] = False,
) -> None:
    """Score extraction tables against a hand-made gold table: cell accuracy, not-stated precision/recall,
    unsupported values shown, seconds per cell (CIs over papers)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from eval.table import evaluate_table, summary_table
    from rag.bundled import TABLE_GOLD, bundled_file
    from rag.cli_options import answer_settings
    from rag.table.columns import parse_columns

    cfg = answer_settings(backend, model)
    chosen = parse_columns(columns) if columns else None
    where = out_dir or Path("runs") / f"table-{(model or cfg.llm.model or cfg.llm.backend).replace('/', '_')}"
    bar = [TextColumn("eval table"), BarColumn(), MofNCompleteColumn(), TextColumn("papers"), TimeElapsedColumn()]
    with Progress(*bar, console=console, transient=True) as progress:
        task = progress.add_task("table", total=None)
        summary = evaluate_table(gold or bundled_file(TABLE_GOLD), cfg, where, chosen, limit, backend,
                                 progress=lambda done, total: progress.update(task, completed=done, total=total))
    if as_json:
        emit_json(summary)
        return
    out.print(summary_table(summary))
    console.print(f"wrote {where}/results.jsonl, summary.json", markup=False, highlight=False)


def bench(
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/bench-<timestamp>).")] = None,
    scale: Annotated[str, typer.Option(help="Synthetic corpus sizes for the scale step, e.g. 10000,30000,100000.")]
    = "10000,30000",
    quick: Annotated[bool, typer.Option(help="Skip the scale step and the throughput sweep.")] = False,
    device: Annotated[str | None, typer.Option(help="Embedding device: cpu, cuda, cuda:1, mps.")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds per measurement (medians).")] = 3,
    server_scale: Annotated[str | None, typer.Option(
        help="Sizes also ingested into a `chroma run` server (default: the smallest scale size; "
             "`none`: no server point).")] = None,
    only: Annotated[str | None, typer.Option(
        help="Run only these steps, e.g. scale or cold_start,llm (first_ingest reingest retrieval cold_start llm "
             "answer tokenization throughput scale api memory).")] = None,
    store_only: Annotated[bool, typer.Option(
        "--store-only", help="Scale step: write pseudo-vectors seeded from each chunk's hash instead of running the "
                             "model (measures the store, the lexical index and memory at large sizes in minutes).")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON (scale: one object per point) "
                                                         "instead of the table.")] = False,
) -> None:
    """Measure ingest, re-ingest, retrieval, cold start, LLM, scale and throughput against baselines."""
    from eval.bench import json_summary, parse_server_sizes, parse_sizes, parse_steps, run_bench

    results = run_bench(out=out_dir, scale=parse_sizes(scale), quick=quick, device=device, rounds=rounds,
                        console=console, server_scale=parse_server_sizes(server_scale),
                        skip=sorted(parse_steps(only)) if only else (), store_only=store_only, table=not as_json)
    if as_json:
        emit_json(json_summary(results))


def register_commands(app: typer.Typer) -> None:
    """Add the ``eval`` group and ``bench`` to ``app``."""
    app.add_typer(eval_app, name="eval")
    app.command()(bench)
