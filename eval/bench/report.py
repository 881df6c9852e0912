"""``rag bench`` output: the table on the terminal and ``bench.png``.

`print_table` prints every step's rows (measurement, ours, baseline, ratio, target, pass/miss)
and notes; `plot` draws ratios against targets, retrieval latencies, cold start, scale and
throughput. Left out: measuring (the step modules) and ``bench.json`` (`eval.bench.run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def print_table(results: dict[str, Any], console: Any) -> None:
    """The table on stdout (160 columns when it is not a terminal: a pipe would get 80), notes on ``console``."""
    from rich.console import Console
    from rich.table import Table

    table = Table("measurement", "ours", "baseline", "ratio", "target", "pass/miss",
                  title=f"rag bench ({results['machine']['cpus']} CPUs, device {results['device']})")
    colour = {"pass": "green", "miss": "red", "skipped": "yellow", "error": "red", "info": "dim"}
    for step in results["steps"].values():
        for row in step.get("rows", []):
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
            table.add_row(row["measurement"], row["ours"], row["baseline"], ratio, row["target"],
                          f"[{colour.get(row['status'], 'white')}]{row['status']}[/]")
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)
    out.print(table)
    for name, step in results["steps"].items():
        notes = [f"{k}: {v}" for k, v in step.get("notes", {}).items()]
        for note in ([step["note"]] if step.get("note") else []) + notes:
            console.print(f"note ({name}): {note}", highlight=False, markup=False)
    rec = results["steps"].get("throughput", {}).get("recommendation")
    if rec:
        console.print(f"recommended embedding default: backend {rec['backend']}, batch_size {rec['batch_size']} "
                      f"({rec['reason']})", highlight=False, markup=False)
    proj = results["steps"].get("scale", {}).get("projection")
    if proj:
        console.print(f"projection: {proj['summary']}", highlight=False, markup=False)


def plot(results: dict[str, Any], path: Path) -> Path:
    """bench.png: ratios against targets, retrieval latencies, cold start, scale and throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = results["steps"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    (a_ratio, a_lat, a_cold), (a_scale, a_disk, a_thr) = axes

    names, values, colours = [], [], []
    for key, higher in (("first_ingest", False), ("reingest", False), ("retrieval", False), ("tokenization", True)):
        step = steps.get(key, {})
        if step.get("ratio") and step.get("target"):
            share = step["target"] / step["ratio"] if higher else step["ratio"] / step["target"]
            names.append(key.replace("_", " "))
            values.append(share)
            colours.append("tab:green" if share <= 1 else "tab:red")
    if names:
        a_ratio.barh(names, values, color=colours)
        a_ratio.axvline(1.0, color="black", linestyle="--")
    a_ratio.set_title("ratio / target (<= 1 passes)")

    ret = steps.get("retrieval", {})
    if ret.get("ours_s"):
        a_lat.boxplot([np.array(ret["ours_s"]) * 1000, np.array(ret["baseline_s"]) * 1000],
                      tick_labels=["Retriever.search", "encode + query"], showfliers=False)
    a_lat.set_title("warm retrieval latency (ms)")

    cold = steps.get("cold_start", {}).get("medians_s", {})
    if cold:
        a_cold.bar(list(cold), list(cold.values()), color="tab:blue")
        a_cold.tick_params(axis="x", labelrotation=15)
    a_cold.set_title("cold start (s, median)")

    points = steps.get("scale", {}).get("points", [])
    for mode, marker in (("embedded", "o-"), ("server", "s--")):
        pts = [p for p in points if p["mode"] == mode]
        if pts:
            xs = [p["papers"] for p in pts]
            a_scale.plot(xs, [p["papers_per_s"] for p in pts], marker, label=f"papers/s ({mode})")
            a_disk.plot(xs, [p["disk_bytes"] / 2**20 for p in pts], marker, label=f"disk MB ({mode})")
            a_disk.plot(xs, [p["peak_rss_bytes"] / 2**20 for p in pts], marker, label=f"peak RSS MB ({mode})")
            a_disk.plot(xs, [p["retrieval_median_ms"] for p in pts], marker, label=f"retrieval median ms ({mode})")
    if points:
        a_disk.set_yscale("log")
    for ax, title in ((a_scale, "ingest throughput vs corpus size"), (a_disk, "disk, memory, latency vs size")):
        ax.set_title(title)
        ax.set_xlabel("papers")
        if points:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "scale step not run", ha="center", va="center", transform=ax.transAxes)

    thr = steps.get("throughput", {}).get("results", [])
    torch_rows = [r for r in thr if r["backend"] == "torch"]
    if torch_rows:
        a_thr.plot([r["batch_size"] for r in torch_rows], [r["chunks_per_s"] for r in torch_rows], "o-", label="torch")
        for r in thr:
            if r["backend"] != "torch":
                a_thr.plot([r["batch_size"]], [r["chunks_per_s"]], "s", label=r["backend"])
        a_thr.set_xscale("log", base=2)
        a_thr.legend(fontsize=8)
    else:
        tok = steps.get("tokenization", {}).get("abstracts_per_s")
        if tok:
            a_thr.bar(list(tok), list(tok.values()), color="tab:purple")
            a_thr.tick_params(axis="x", labelrotation=15)
            a_thr.set_title("tokenization (abstracts/s)")
    if torch_rows:
        a_thr.set_title("embedding throughput (chunks/s) by batch size")
        a_thr.set_xlabel("batch size")
    elif not steps.get("tokenization", {}).get("abstracts_per_s"):
        a_thr.text(0.5, 0.5, "throughput sweep not run", ha="center", va="center", transform=a_thr.transAxes)
    fig.suptitle(f"rag bench {results['started']} ({results['machine']['cpus']} CPUs, device {results['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


