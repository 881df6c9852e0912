"""``rag bench`` step 6: synthetic corpora ingested by a child process per size, and the 2.5M projection.

`bench_scale`: synthetic arXiv corpora (`eval.synthetic`) ingested by a child process (embedded
Chroma, and a ``chroma run`` server at the chosen sizes): papers/s, peak RSS, size on disk, warm
retrieval latency in a fresh reader process (`eval.bench.scale_child`), disk by component
(`disk_parts`); `project` fits a line to them and projects it to 2.5M abstracts. ``store_only``
writes pseudo-vectors instead of running the model. Left out: small-corpus latency
(`eval.bench.retrieval`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench.figures import BIN, Log, du, fmt_bytes, loadavg, median, p95, table_row
from rag.settings import Settings
from rag.testing import free_port, stop_process, wait_for_http

PROJECT_TARGET = 2_500_000  # abstracts: the arXiv snapshot's order of magnitude


def _start_chroma(path: Path, log_path: Path) -> tuple[subprocess.Popen[Any], str]:
    port = free_port()
    log_file = log_path.open("wb")
    proc = subprocess.Popen([str(BIN / "chroma"), "run", "--path", str(path), "--host", "127.0.0.1", "--port",
                             str(port)], stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/api/v2/heartbeat", 120, proc)
    except (RuntimeError, TimeoutError):
        stop_process(proc, grace=15)
        raise RuntimeError(f"chroma run did not start (see {log_path})") from None
    return proc, url


class _PeakRSS:
    """Samples a process tree's resident memory in a thread; ``peak`` in bytes."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _run_child(kind: str, spec: dict[str, Any], work: Path) -> tuple[dict[str, Any], int]:
    """Run `eval.bench.scale_child` (``ingest`` or ``reader``) in a fresh interpreter; its figures
    and peak RSS in bytes (its own VmHWM where the OS has one, else sampled from here)."""
    spec_path = work / f"child-{spec['label']}.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.Popen([sys.executable, "-m", "eval.bench.scale_child", kind, str(spec_path)])
    with _PeakRSS(proc.pid, interval=0.5) as sampler:
        proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"scale {kind} child {spec['label']} exited with {proc.returncode}")
    result = json.loads(Path(spec["result"]).with_suffix(f".{kind}.json").read_text())
    result["sampled_peak_rss_bytes"] = sampler.peak
    return result, int(result.get("peak_rss_bytes") or sampler.peak)


def disk_parts(home: Path, collection: str, chroma: Path | None = None) -> dict[str, int]:
    """Bytes on disk by component: Chroma's HNSW segments, Chroma's SQLite (with its WAL), the
    BM25 index and the paper catalogue (``catalogue.sqlite3`` in the lexical folder). ``chroma``:
    a server's data folder (default the embedded one in ``home``)."""
    lexical = home / "lexical" / collection
    chroma = chroma if chroma is not None else home / "chroma"
    sqlite = sum(p.stat().st_size for p in chroma.glob("chroma.sqlite3*")) if chroma.is_dir() else 0
    hnsw = sum(du(p) for p in chroma.iterdir() if p.is_dir()) if chroma.is_dir() else 0
    catalogue = sum(p.stat().st_size for p in lexical.glob("catalogue.sqlite3*")) if lexical.is_dir() else 0
    return {"chroma_hnsw": hnsw, "chroma_sqlite": sqlite, "lexical": du(lexical) - catalogue,
            "catalogue": catalogue,
            "other": du(home) - du(lexical) - (hnsw + sqlite if chroma.is_relative_to(home) else 0)}


def _fit(xs: Sequence[float], ys: Sequence[float], at: float) -> tuple[float, float, float]:
    """(slope, intercept, value at ``at``): least squares with 2+ points, through 0 with one."""
    if len(xs) >= 2:
        slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    else:
        slope, intercept = ys[0] / xs[0], 0.0
    return float(slope), float(intercept), float(slope * at + intercept)


def project(points: Sequence[dict[str, Any]], target: int = PROJECT_TARGET) -> dict[str, Any]:
    """Linear projection of ingest time, disk and peak RSS (embedded Chroma) to ``target`` papers;
    with two or more server sizes, also the ingest process's and the Chroma server's peak RSS
    (``server``)."""
    served = [p for p in points if p["mode"] == "server" and p.get("server_peak_rss_bytes")]
    points = [p for p in points if p["mode"] == "embedded"]
    if not points:
        return {}
    xs = [p["papers"] for p in points]
    out: dict[str, Any] = {"papers": target, "from_sizes": xs,
                           "method": "least-squares line over the measured sizes" if len(xs) > 1
                           else "one size measured: proportional (through the origin)"}
    for key in ("ingest_s", "disk_bytes", "peak_rss_bytes"):
        slope, intercept, value = _fit(xs, [p[key] for p in points], target)
        if slope < 0:  # noise over sizes too close together: no growth measured, none projected
            slope, intercept, value = 0.0, max(p[key] for p in points), max(p[key] for p in points)
        if key == "peak_rss_bytes" and len(xs) == 1 and points[0].get("rss_after_load_bytes"):
            # one size: the memory after loading the model is the fixed part, the rest grows with papers
            intercept = float(points[0]["rss_after_load_bytes"])
            slope = (points[0][key] - intercept) / xs[0]
            value = intercept + slope * target
        out[key] = {"slope_per_paper": slope, "intercept": intercept, "projected": value}
    seconds = out["ingest_s"]["projected"]
    what = "store only (no embedding; the model adds its time and ~0.5 GB)" if all(
        p.get("store_only") for p in points) else "on this machine"
    server_part = ""
    if len({p["papers"] for p in served}) >= 2:
        xs = [p["papers"] for p in served]
        out["server"] = {key: dict(zip(("slope_per_paper", "intercept", "projected"),
                                       _fit(xs, [p[key] for p in served], target)))
                         for key in ("peak_rss_bytes", "server_peak_rss_bytes")}
        server_part = (f"; into a Chroma server: ingest process "
                       f"~{fmt_bytes(out['server']['peak_rss_bytes']['projected'])}, server "
                       f"~{fmt_bytes(out['server']['server_peak_rss_bytes']['projected'])}")
    out["summary"] = (f"{target:,} abstracts {what}: ingest ~{seconds / 3600:.0f} h "
                      f"({seconds / 86400:.1f} days) at {1 / out['ingest_s']['slope_per_paper']:.1f} papers/s, "
                      f"~{fmt_bytes(out['disk_bytes']['projected'])} on disk, peak RSS "
                      f"~{fmt_bytes(out['peak_rss_bytes']['projected'])} (linear; HNSW inserts grow ~log N, "
                      f"so this is a lower bound){server_part}")
    return out


def bench_scale(base: Settings, work: Path, sizes: Sequence[int], queries: Sequence[str],
                server_sizes: Sequence[int] | None = None, log: Log = print,
                on_point: Callable[[dict[str, Any]], None] | None = None, store_only: bool = False) -> dict[str, Any]:
    """Ingest synthetic corpora of each size (embedded, and served at ``server_sizes``, default
    the smallest size, none when ``store_only``) in a child process, then open each in a fresh
    reader process; throughput, memory, disk, latency. ``store_only``: pseudo-vectors instead
    of the model (`rag.testing.HashEmbedder`), so large sizes take minutes."""
    from eval.synthetic import generate

    server_sizes = list(server_sizes) if server_sizes is not None else ([] if store_only else [min(sizes)])
    points: list[dict[str, Any]] = []
    for n in sizes:
        corpus = generate(n, work / f"synthetic-{n}.jsonl")
        for mode in ["embedded"] + (["server"] if n in server_sizes else []):
            label = f"{n}-{mode}"
            home = work / f"scale-{label}"
            shutil.rmtree(home, ignore_errors=True)
            spec = {"label": label, "home": str(home), "corpus": str(corpus), "queries": list(queries),
                    "settings": json.loads(base.model_dump_json()), "result": str(work / f"result-{label}.json"),
                    "store_only": store_only}
            log(f"scale: {n:,} papers, {mode} Chroma{', store only' if store_only else ''} (child processes)")
            server, server_peak, server_path = None, None, work / f"chroma-server-{n}"
            load_before = loadavg()
            try:
                if mode == "server":
                    shutil.rmtree(server_path, ignore_errors=True)
                    server, spec["chroma_url"] = _start_chroma(server_path, work / f"chroma-{n}.log")
                    with _PeakRSS(server.pid) as sampler:
                        result, child_peak = _run_child("ingest", spec, work)
                        reader, _ = _run_child("reader", spec, work)
                    server_peak = sampler.peak
                else:
                    result, child_peak = _run_child("ingest", spec, work)
                    reader, _ = _run_child("reader", spec, work)
            finally:
                if server is not None:
                    stop_process(server, grace=15)
            disk = du(home) + (du(server_path) if mode == "server" else 0)
            parts = disk_parts(home, base.store.collection, server_path if mode == "server" else None)
            lat = reader["retrieval_s"]
            reader_rss = reader["rss_bytes"]["first_query"]
            point = {"papers": n, "chunks": result["chunks"], "seconds": round(result["ingest_s"], 2),
                     "ingest_peak_rss_mb": round(child_peak / 2**20, 1), "reader_rss_mb": round(reader_rss / 2**20, 1),
                     "disk_mb": round(disk / 2**20, 1), "retrieval_ms_p50": round(median(lat) * 1000, 2),
                     "retrieval_ms_p95": round(p95(lat) * 1000, 2),
                     "mode": mode, "store_only": store_only, "ingest_s": result["ingest_s"],
                     "papers_per_s": n / result["ingest_s"],
                     "chunks_per_s": result["chunks_embedded"] / result["ingest_s"],
                     "load_model_s": result["load_model_s"], "peak_rss_bytes": child_peak,
                     "rss_after_load_bytes": result.get("rss_after_load_bytes"),
                     "sampled_peak_rss_bytes": result.get("sampled_peak_rss_bytes"),
                     "server_peak_rss_bytes": server_peak, "disk_bytes": disk,
                     "retrieval_median_ms": median(lat) * 1000, "retrieval_p95_ms": p95(lat) * 1000,
                     "stages_median_ms": reader["stages_median_ms"], "rejected": result["rejected"],
                     "disk_parts_bytes": parts, "disk_bytes_per_paper": disk / n,
                     "reader_rss_bytes": reader["rss_bytes"], "reader_first_query_s": reader["first_query_s"],
                     "reader_onnx_queries": reader["onnx_queries"], "reader_peak_rss_bytes": reader["peak_rss_bytes"],
                     "loadavg_1min": [load_before, loadavg()]}
            points.append(point)
            log(f"scale: {label}: {point['papers_per_s']:.1f} papers/s, peak RSS {fmt_bytes(child_peak)}, "
                f"reader RSS {fmt_bytes(reader_rss)}, disk {fmt_bytes(disk)} "
                f"({', '.join(f'{k} {fmt_bytes(v)}' for k, v in parts.items())}), "
                f"retrieval {point['retrieval_median_ms']:.1f} ms median")
            if on_point:
                on_point(point)
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(server_path, ignore_errors=True)
    projection = project(points)
    rows = []
    for p in points:
        rss = fmt_bytes(p["peak_rss_bytes"]) + (f" + server {fmt_bytes(p['server_peak_rss_bytes'])}"
                                                 if p["server_peak_rss_bytes"] else "")
        what = p["mode"] + (", store only" if p.get("store_only") else "")
        rows.append(table_row(f"scale {p['papers']:,} papers ({what})", f"{p['papers_per_s']:.1f} papers/s",
                              f"RSS {rss}, reader {fmt_bytes(p['reader_rss_bytes']['first_query'])}, "
                              f"disk {fmt_bytes(p['disk_bytes'])}, retrieval "
                              f"{p['retrieval_median_ms']:.0f}/{p['retrieval_p95_ms']:.0f} ms (median/p95), "
                              f"load {'->'.join(str(x) for x in p['loadavg_1min'])}", None, "-",
                              "info"))
    if projection:
        rows.append(table_row(f"projection: {PROJECT_TARGET:,} abstracts",
                              f"{projection['ingest_s']['projected'] / 3600:.0f} h",
                              f"disk {fmt_bytes(projection['disk_bytes']['projected'])}, RSS "
                              f"{fmt_bytes(projection['peak_rss_bytes']['projected'])}", None, "-", "info"))
    return {"sizes": list(sizes), "server_sizes": server_sizes, "points": points, "projection": projection,
            "rows": rows}
