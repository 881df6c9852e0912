"""``rag bench`` step 6: synthetic corpora ingested by a child process per size, and the 2.5M projection.

`bench_scale`: synthetic arXiv corpora (`eval.synthetic`) ingested by a child process (embedded
Chroma, and a ``chroma run`` server at the chosen sizes): papers/s, peak RSS, size on disk, warm
retrieval latency; `project` fits a line to them and projects it to 2.5M abstracts. Run as
``python -m eval.bench.scale --child SPEC`` it is that child. Left out: small-corpus latency
(`eval.bench.retrieval`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench.figures import BIN, Log, bench_settings, du, fmt_bytes, loadavg, median, p95, table_row
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


def _peak_rss_self() -> int | None:
    """This process's peak resident memory (VmHWM, Linux). Not ``ru_maxrss`` of a child: on
    Linux a forked child inherits its parent's high-water mark through exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _run_child(spec: dict[str, Any], work: Path) -> tuple[dict[str, Any], int]:
    """Run `_scale_child` in a fresh interpreter; its result and peak RSS in bytes (its own
    VmHWM where the OS has one, else sampled from here)."""
    spec_path = work / f"child-{spec['label']}.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.Popen([sys.executable, "-m", "eval.bench.scale", "--child", str(spec_path)])
    with _PeakRSS(proc.pid, interval=0.5) as sampler:
        proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"scale child {spec['label']} exited with {proc.returncode}")
    result = json.loads(Path(spec["result"]).read_text())
    result["sampled_peak_rss_bytes"] = sampler.peak
    return result, int(result.get("peak_rss_bytes") or sampler.peak)


def _scale_child(spec_path: str) -> None:
    """Child side of `bench_scale`: load the model, ingest, time warm retrieval, write JSON."""
    from rag.embeddings import Embedder
    from rag.ingest import Ingestor
    from rag.retrieval import Retriever

    spec = json.loads(Path(spec_path).read_text())
    base = Settings.model_validate(spec["settings"])
    settings = bench_settings(base, Path(spec["home"]), spec.get("chroma_url"))
    start = time.perf_counter()
    embedder = Embedder(settings.embedding)
    embedder.model  # noqa: B018 - load now, outside the ingest timing
    load_s = time.perf_counter() - start
    import psutil

    rss_after_load = psutil.Process().memory_info().rss  # the fixed part: interpreter, torch, model
    state = {"total": 0, "done": 0, "next": 0.0, "t0": time.perf_counter()}

    def on_start(total: int) -> None:
        state.update(total=total, t0=time.perf_counter())

    def on_embedded(n: int) -> None:
        state["done"] += n
        if state["total"] and state["done"] / state["total"] >= state["next"]:
            rate = state["done"] / max(1e-9, time.perf_counter() - state["t0"])
            print(f"  [{spec['label']}] {state['done']}/{state['total']} chunks embedded, {rate:.1f} chunks/s",
                  file=sys.stderr, flush=True)
            state["next"] += 0.1

    summary = Ingestor(settings, embedder=embedder).run([spec["corpus"]], on_start=on_start, on_embedded=on_embedded)
    retriever = Retriever(settings, embedder=embedder)
    queries = spec["queries"]
    for q in queries[:3]:
        retriever.search(q)
    latencies, stages = [], {}
    for _ in range(spec.get("passes", 2)):
        for q in queries:
            t = time.perf_counter()
            result = retriever.search(q)
            latencies.append(time.perf_counter() - t)
            for key, value in result.timings.items():
                stages.setdefault(key, []).append(value)
    Path(spec["result"]).write_text(json.dumps({
        "load_model_s": load_s, "rss_after_load_bytes": rss_after_load, "ingest_s": summary.seconds,
        "papers": summary.papers_total,
        "chunks": summary.chunks_total, "chunks_embedded": summary.chunks_embedded, "rejected": summary.rejected,
        "retrieval_s": latencies, "stages_median_ms": {k: round(median(v) * 1000, 3) for k, v in stages.items()},
        "peak_rss_bytes": _peak_rss_self(),
    }))


def _fit(xs: Sequence[float], ys: Sequence[float], at: float) -> tuple[float, float, float]:
    """(slope, intercept, value at ``at``): least squares with 2+ points, through 0 with one."""
    if len(xs) >= 2:
        slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    else:
        slope, intercept = ys[0] / xs[0], 0.0
    return float(slope), float(intercept), float(slope * at + intercept)


def project(points: Sequence[dict[str, Any]], target: int = PROJECT_TARGET) -> dict[str, Any]:
    """Linear projection of ingest time, disk and peak RSS (embedded Chroma) to ``target`` papers."""
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
    out["summary"] = (f"{target:,} abstracts on this machine: ingest ~{seconds / 3600:.0f} h "
                      f"({seconds / 86400:.1f} days) at {1 / out['ingest_s']['slope_per_paper']:.1f} papers/s, "
                      f"~{fmt_bytes(out['disk_bytes']['projected'])} on disk, peak RSS "
                      f"~{fmt_bytes(out['peak_rss_bytes']['projected'])} (linear; HNSW inserts grow ~log N, "
                      "so this is a lower bound)")
    return out


def bench_scale(base: Settings, work: Path, sizes: Sequence[int], queries: Sequence[str],
                server_sizes: Sequence[int] | None = None, log: Log = print,
                on_point: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Ingest synthetic corpora of each size (embedded, and served at ``server_sizes``,
    default the smallest size) in a child process; throughput, memory, disk, latency."""
    from eval.synthetic import generate

    server_sizes = list(server_sizes) if server_sizes is not None else [min(sizes)]
    points: list[dict[str, Any]] = []
    for n in sizes:
        corpus = generate(n, work / f"synthetic-{n}.jsonl")
        for mode in ["embedded"] + (["server"] if n in server_sizes else []):
            label = f"{n}-{mode}"
            home = work / f"scale-{label}"
            shutil.rmtree(home, ignore_errors=True)
            spec = {"label": label, "home": str(home), "corpus": str(corpus), "queries": list(queries),
                    "settings": json.loads(base.model_dump_json()), "result": str(work / f"result-{label}.json")}
            log(f"scale: {n:,} papers, {mode} Chroma (child process)")
            server, server_peak, server_path = None, None, work / f"chroma-server-{n}"
            load_before = loadavg()
            try:
                if mode == "server":
                    shutil.rmtree(server_path, ignore_errors=True)
                    server, spec["chroma_url"] = _start_chroma(server_path, work / f"chroma-{n}.log")
                    with _PeakRSS(server.pid) as sampler:
                        result, child_peak = _run_child(spec, work)
                    server_peak = sampler.peak
                else:
                    result, child_peak = _run_child(spec, work)
            finally:
                if server is not None:
                    stop_process(server, grace=15)
            disk = du(home) + (du(server_path) if mode == "server" else 0)
            lat = result["retrieval_s"]
            point = {"papers": n, "mode": mode, "chunks": result["chunks"], "ingest_s": result["ingest_s"],
                     "papers_per_s": n / result["ingest_s"],
                     "chunks_per_s": result["chunks_embedded"] / result["ingest_s"],
                     "load_model_s": result["load_model_s"], "peak_rss_bytes": child_peak,
                     "rss_after_load_bytes": result.get("rss_after_load_bytes"),
                     "sampled_peak_rss_bytes": result.get("sampled_peak_rss_bytes"),
                     "server_peak_rss_bytes": server_peak, "disk_bytes": disk,
                     "retrieval_median_ms": median(lat) * 1000, "retrieval_p95_ms": p95(lat) * 1000,
                     "stages_median_ms": result["stages_median_ms"], "rejected": result["rejected"],
                     "loadavg_1min": [load_before, loadavg()]}
            points.append(point)
            log(f"scale: {label}: {point['papers_per_s']:.1f} papers/s, peak RSS {fmt_bytes(child_peak)}, "
                f"disk {fmt_bytes(disk)}, retrieval {point['retrieval_median_ms']:.1f} ms median")
            if on_point:
                on_point(point)
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(server_path, ignore_errors=True)
    projection = project(points)
    rows = []
    for p in points:
        rss = fmt_bytes(p["peak_rss_bytes"]) + (f" + server {fmt_bytes(p['server_peak_rss_bytes'])}"
                                                 if p["server_peak_rss_bytes"] else "")
        rows.append(table_row(f"scale {p['papers']:,} papers ({p['mode']})", f"{p['papers_per_s']:.1f} papers/s",
                              f"RSS {rss}, disk {fmt_bytes(p['disk_bytes'])}, retrieval "
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




if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _scale_child(sys.argv[2])
