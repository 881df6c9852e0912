"""``rag bench``: run the measurements, print the table, write ``bench.json`` and ``bench.png``.

`run_bench` runs the steps in `STEPS` (one module each in this package), prints a rich table
(measurement, ours, baseline, ratio, target, pass/miss), and writes ``bench.json`` and
``bench.png`` into a run folder (default ``runs/bench-<timestamp>``); ``bench.json`` is rewritten
after every step, so an interrupted run keeps what it measured. `parse_sizes` and `parse_steps`
read the command's options. Left out: the measurements themselves.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eval.bench.answer import bench_answer
from eval.bench.api import bench_api
from eval.bench.cold_start import bench_cold_start
from eval.bench.figures import BUNDLED, bench_queries, bench_settings, loadavg, skipped_step, table_row
from eval.bench.ingest import bench_first_ingest, bench_reingest, chunk_texts
from eval.bench.llm import bench_llm_ttft
from eval.bench.memory import bench_memory, json_figures
from eval.bench.report import plot, print_table
from eval.bench.retrieval import bench_retrieval
from eval.bench.scale import bench_scale
from eval.bench.table import bench_table
from eval.bench.throughput import bench_throughput
from eval.bench.tokenization import bench_tokenization
from eval.bench.web import bench_web
from rag.errors import InputError
from rag.settings import Settings


def parse_sizes(text: str) -> list[int]:
    """``"10000,30_000"`` -> ``[10000, 30000]``; raises `InputError` on anything else."""
    try:
        sizes = [int(part.strip().replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise InputError(f"--scale {text!r} is not a list of paper counts", "use e.g. --scale 10000,30000,100000")
    return sizes


def parse_server_sizes(text: str | None) -> list[int] | None:
    """``--server-scale``: ``None`` (the default: the smallest size), ``"none"`` (no server point:
    ``[]``) or sizes as `parse_sizes` reads them."""
    if text is None:
        return None
    return [] if text.strip().lower() == "none" else parse_sizes(text)


def parse_steps(only: str) -> set[str]:
    """``--only scale,llm`` -> the steps to skip; an unknown name is an input error."""
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    unknown = wanted - set(STEPS)
    if unknown or not wanted:
        raise InputError(f"unknown bench step(s): {', '.join(sorted(unknown)) or repr(only)}",
                         f"choose from {', '.join(STEPS)}")
    return set(STEPS) - wanted


def machine() -> dict[str, Any]:
    import torch

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": cpus,
            "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}



MODEL_FREE = {"scale", "llm"}  # steps that need no embedder in this process (scale runs its own children)
STEPS = ("first_ingest", "reingest", "retrieval", "cold_start", "llm", "answer", "web", "table", "scale",
         "throughput", "tokenization", "api", "memory")


def run_bench(out: str | Path | None = None, scale: Sequence[int] = (10_000, 30_000), quick: bool = False,
              device: str | None = None, corpus: Sequence[str | Path] | None = None, rounds: int = 3,
              n_queries: int = 50, skip: Sequence[str] = (), tokenize_texts: int | None = None,
              server_scale: Sequence[int] | None = None, console: Any | None = None, store_only: bool = False,
              table: bool = True) -> dict[str, Any]:
    """Run the measurements and write ``bench.json`` and ``bench.png`` into ``out``.

    ``quick`` skips the scale step, the throughput sweep and the memory step (and tokenizes 4,000 abstracts
    instead of 20,000). ``skip`` names steps (see `STEPS`) to leave out. A step that fails is
    recorded with its error and the run goes on. ``store_only``: the scale step writes
    pseudo-vectors instead of running the model. ``table=False`` leaves the table unprinted
    (``rag bench --json`` prints `json_summary` instead).
    """
    from rich.console import Console

    from rag.index.embeddings import Embedder

    console = console or Console(stderr=True)
    started = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(out) if out else Path("runs") / f"bench-{started}"
    run_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=run_dir))
    corpus_paths = [Path(p) for p in (corpus or [BUNDLED])]
    base = Settings()
    if device:
        base = base.model_copy(update={"embedding": base.embedding.model_copy(update={"device": device})})
    skipped: set[str] = set(skip) | ({"scale", "throughput", "memory"} if quick else set())
    if not scale:
        skipped.add("scale")

    def log(message: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", highlight=False)

    results: dict[str, Any] = {"started": started, "device": base.embedding.device, "quick": quick,
                               "corpus": [str(p) for p in corpus_paths], "rounds": rounds,
                               "settings": {"embedding": base.embedding.model_dump(),
                                            "retrieval": base.retrieval.model_dump()},
                               "machine": machine(), "steps": {}}
    json_path, png_path = run_dir / "bench.json", run_dir / "bench.png"

    def save() -> None:
        json_path.write_text(json.dumps(results, indent=2, default=str))

    embedder = Embedder(base.embedding)
    if set(STEPS) - skipped - MODEL_FREE:
        log(f"loading the embedder on {base.embedding.device}")
        t0 = time.perf_counter()
        embedder.model  # noqa: B018 - loaded once, outside every timing
        results["model_load_s"] = time.perf_counter() - t0
    queries = bench_queries(n_queries, corpus_paths[0] if corpus_paths[0].suffix == ".jsonl" else BUNDLED)
    steps = results["steps"]

    def step(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if name in skipped:
            why = "skipped by request" if not quick else "skipped (--quick)"
            steps[name] = skipped_step(name.replace("_", " "), why)
            return steps[name]
        log(f"[bold]{name}[/] (load {loadavg()})")
        load_before = loadavg()
        try:
            steps[name] = fn()
        except Exception as err:  # noqa: BLE001 - record and go on: one broken step must not lose the rest
            steps[name] = {"error": f"{type(err).__name__}: {err}",
                           "rows": [table_row(name.replace("_", " "), "-", "-", None, "-", "error")],
                           "note": f"failed: {type(err).__name__}: {str(err)[:300]}"}
        steps[name]["loadavg_1min"] = [load_before, loadavg()]
        save()
        return steps[name]

    try:
        first = step("first_ingest", lambda: bench_first_ingest(embedder, base, corpus_paths, work, rounds, log))
        homes = first.get("homes", [])
        needs_index = {"retrieval", "cold_start", "api", "answer", "web", "table", "memory"}
        if not homes and needs_index - skipped:
            from rag.ingest.ingestor import Ingestor

            Ingestor(bench_settings(base, work / "ingest-0"), embedder=embedder).run(corpus_paths)
            homes = [str(work / "ingest-0")]
        if "ours" in first:
            step("reingest", lambda: bench_reingest(embedder, base, corpus_paths, homes, first["ours"], log))
        else:
            steps["reingest"] = skipped_step("re-ingest", "needs the first-ingest measurement")
        step("retrieval", lambda: bench_retrieval(embedder, base, Path(homes[0]), queries, log=log))
        step("cold_start", lambda: bench_cold_start(Path(homes[0]), queries[0], rounds, device, log=log))
        step("llm", lambda: bench_llm_ttft(rounds, log))
        step("answer", lambda: bench_answer(Path(homes[0]), log=log, settings=lambda h: bench_settings(base, h)))
        step("web", lambda: bench_web(Path(homes[0]), log=log, settings=lambda h: bench_settings(base, h)))
        step("table", lambda: bench_table(Path(homes[0]), log=log, settings=lambda h: bench_settings(base, h)))
        step("api", lambda: bench_api(Path(homes[0]), embedder, rounds, log=log))
        step("memory", lambda: bench_memory(Path(homes[0]), log=log))
        step("tokenization", lambda: bench_tokenization(
            embedder, tokenize_texts or (4_000 if quick else 20_000), rounds=2 if quick else 3, log=log))
        step("throughput", lambda: bench_throughput(embedder, _throughput_sample(embedder, base, corpus_paths),
                                                    work, rounds=rounds, log=log))
        partial: list[dict[str, Any]] = []

        def on_point(point: dict[str, Any]) -> None:
            partial.append(point)
            steps["scale"] = {"points": partial, "rows": [], "note": "in progress"}
            save()

        step("scale", lambda: bench_scale(base, work, scale, queries[:30], server_scale, log=log,
                                          on_point=on_point, store_only=store_only))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        results["finished"] = time.strftime("%Y%m%d-%H%M%S")
        results["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        save()
    plot(results, png_path)
    if table:
        print_table(results, console)
    console.print(f"wrote {json_path} and {png_path}", highlight=False)
    results["run_dir"] = str(run_dir)
    return results


def _throughput_sample(embedder: Any, base: Settings, corpus: Sequence[Path], n: int = 128) -> list[str]:
    """A fixed random sample of the corpus's chunk texts (all of them when fewer)."""
    import random

    _, texts = chunk_texts(embedder, base, corpus)
    return random.Random(0).sample(texts, min(n, len(texts)))


SCALE_KEYS = ("papers", "chunks", "seconds", "ingest_peak_rss_mb", "reader_rss_mb", "disk_mb", "retrieval_ms_p50",
              "retrieval_ms_p95")


def json_summary(results: dict[str, Any]) -> dict[str, Any]:
    """What ``rag bench --json`` prints: per scale point `SCALE_KEYS` (and its mode and disk by
    component), per other step that ran its ``ours``, ``baseline``, ``ratio`` and ``target``."""
    out: dict[str, Any] = {}
    for name, step in results["steps"].items():
        if step.get("skipped"):
            continue
        if name == "scale":
            out["scale"] = [{**{k: p.get(k) for k in SCALE_KEYS}, "mode": p.get("mode"),
                             "store_only": p.get("store_only", False),
                             "server_peak_rss_mb": round(p["server_peak_rss_bytes"] / 2**20, 1)
                             if p.get("server_peak_rss_bytes") else None,
                             "disk_mb_by_part": {k: round(v / 2**20, 1)
                                                 for k, v in p.get("disk_parts_bytes", {}).items()},
                             "reader_rss_mb_by_stage": {k: round(v / 2**20, 1)
                                                        for k, v in p.get("reader_rss_bytes", {}).items()}}
                            for p in step.get("points", [])]
            if step.get("error"):
                out["scale_error"] = step["error"]
        elif name == "answer" and "answer" in step:
            out["answer"] = {**step["answer"], "knobs": step.get("knobs", {})}
        elif name in ("table", "web") and name in step:
            out[name] = step[name]
        elif name == "memory" and not step.get("error"):
            out[name] = json_figures(step)
        else:
            out[name] = {k: step.get(k) for k in ("ours", "baseline", "ratio", "target", "error") if k in step}
    return out
