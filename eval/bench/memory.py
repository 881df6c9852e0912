"""``rag bench --only memory``: what a cold ``rag ask`` and a ``rag serve`` hold, by stage.

Three real processes over one data home, with the configured answer backend (the bundled model
by default):

1. `eval.bench.memory_child`: a cold ``rag ask`` one stage at a time (imports, index open,
   embedder, model assembled, model loaded, first answer), each stage's wall time and memory;
2. the real ``rag ask QUESTION``, its wall time and its peak resident memory, read from
   ``/proc/PID/status`` (VmHWM) while it runs (not ``ru_maxrss``: on Linux a child inherits its
   parent's high-water mark through exec, and this parent holds torch);
3. the real ``rag serve``: its memory once it answers HTTP (models loaded), after its first
   answer and after ``answers`` answers through its API (``/v1/chat/completions``), and whether
   torch was loaded into it (``libtorch`` in its memory map).

Memory is RSS with its peak, and PSS, anonymous and file-backed parts (`process_memory`): a
memory-mapped GGUF counts in RSS as file pages that other processes mapping it share and the
kernel may drop. Targets (issue 24): ``rag serve`` <= 2.0 GB RSS after ten answers, a cold
``rag ask`` <= 1.6 GB peak. Left out: ingest memory (`eval.bench.scale`), concurrent clients
(`eval.bench.api`), and whether the answers are good (``rag eval``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from eval.bench.figures import BIN, DEV, Log, fmt_bytes, fmt_s, table_row, verdict
from eval.bench.memory_child import process_memory
from rag.testing import free_port, running_server, stop_process

SERVE_TARGET = 2.0 * 2**30  # bytes of RSS after ten answers
ASK_TARGET = 1.6 * 2**30  # bytes of peak RSS, cold `rag ask`
CHILD = Path(__file__).with_name("memory_child.py")
POLL_S = 0.05


def torch_loaded(pid: int) -> bool | None:
    """Whether ``libtorch`` is mapped into process ``pid`` (None when its map cannot be read)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None


def bench_questions(n: int) -> list[str]:
    """``n`` dev-set questions (first turns), in file order, repeated if there are fewer."""
    pool = [record.get("turns", [record])[0]["question"]
            for record in map(json.loads, DEV.read_text(encoding="utf-8").splitlines())]
    return [pool[i % len(pool)] for i in range(n)]


def bench_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the measured processes: this one's, on ``home``, offline."""
    return {**os.environ, "RAG_HOME": str(home), "HF_HUB_OFFLINE": "1", **(extra or {})}


def ask_by_stage(home: Path, question: str, env: dict[str, str] | None = None, timeout: float = 900) -> dict[str, Any]:
    """`eval.bench.memory_child` in a fresh process: each stage's seconds and memory."""
    with tempfile.TemporaryDirectory() as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"question": question, "result": str(result)}))
        got = subprocess.run([sys.executable, str(CHILD), str(spec)], env=bench_env(home, env), capture_output=True,
                             text=True, timeout=timeout)
        if got.returncode != 0:
            raise RuntimeError(f"the cold-ask child exited {got.returncode}: {(got.stderr or got.stdout)[-400:]}")
        return dict(json.loads(result.read_text()))


def watch(proc: subprocess.Popen[Any], timeout: float) -> dict[str, int]:
    """Poll ``proc`` until it exits; the largest of each memory figure seen (``peak_rss`` is VmHWM)."""
    peak: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            stop_process(proc)
            raise TimeoutError(f"still running after {timeout:.0f} s")
        for key, value in process_memory(proc.pid).items():
            peak[key] = max(peak.get(key, 0), value)
        time.sleep(POLL_S)
    return peak


def real_ask(home: Path, question: str, env: dict[str, str] | None = None, timeout: float = 900) -> dict[str, Any]:
    """The real ``rag ask``: wall seconds and the largest memory figures seen while it ran."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([str(BIN / "rag"), "ask", question], env=bench_env(home, env),
                                stdout=subprocess.DEVNULL, stderr=errors)
        peak = watch(proc, timeout)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"rag ask exited {proc.returncode}: {errors.read().decode('utf-8', 'replace')[-400:]}")
    return {"seconds": seconds, "memory": peak}


def serve_by_stage(home: Path, questions: list[str], env: dict[str, str] | None = None,
                   timeout: float = 900) -> dict[str, Any]:
    """A real ``rag serve``: memory once it answers HTTP, then after each answer through its API."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stages: list[dict[str, Any]] = []
    with running_server([str(BIN / "rag"), "serve", "--port", str(port)], url + "/health", timeout,
                        env=bench_env(home, env), start_new_session=True) as proc:
        stages.append({"stage": "started", "answers": 0, **process_memory(proc.pid)})
        with httpx.Client(timeout=timeout) as client:
            for i, question in enumerate(questions, 1):
                start = time.perf_counter()
                response = client.post(url + "/v1/chat/completions", json={
                    "model": "paper-rag", "messages": [{"role": "user", "content": question}]})
                response.raise_for_status()
                stages.append({"stage": f"answer {i}", "answers": i, "seconds": time.perf_counter() - start,
                               **process_memory(proc.pid)})
        return {"stages": stages, "torch": torch_loaded(proc.pid)}


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The stage tables as text: memory in MB (2^20 bytes), seconds for the cold ask."""
    lines = ["cold rag ask, by stage: seconds | RSS | peak RSS | PSS | anon | file (MB)"]
    for s in result["ask"]["stages"]:
        lines.append(f"  {s['stage']:<15} {s['seconds']:7.2f} s | {_mb(s.get('rss'))} | {_mb(s.get('peak_rss'))} | "
                     f"{_mb(s.get('pss'))} | {_mb(s.get('rss_anon'))} | {_mb(s.get('rss_file'))}"
                     + ("  (torch imported)" if s.get("torch") else ""))
    lines.append("rag serve: RSS | peak RSS | PSS | anon | file (MB)")
    for s in result["serve"]["stages"]:
        if s["answers"] in (0, 1) or s is result["serve"]["stages"][-1]:
            lines.append(f"  {s['stage']:<15} {_mb(s.get('rss'))} | {_mb(s.get('peak_rss'))} | {_mb(s.get('pss'))} | "
                         f"{_mb(s.get('rss_anon'))} | {_mb(s.get('rss_file'))}")
    return lines


def bench_memory(home: Path, answers: int = 10, env: dict[str, str] | None = None, log: Log = print) -> dict[str, Any]:
    """``rag bench``'s memory step: the three processes above, then the table rows."""
    questions = bench_questions(max(1, answers))
    log("memory: a cold rag ask, stage by stage")
    ask = ask_by_stage(home, questions[0], env)
    log("memory: the real rag ask")
    real = real_ask(home, questions[0], env)
    log(f"memory: rag serve and {answers} answers through its API")
    serve = serve_by_stage(home, questions, env)
    result: dict[str, Any] = {"ask": ask, "real_ask": real, "serve": serve, "answers": answers}
    for line in summary_lines(result):
        log(line)

    ask_peak = max(s.get("peak_rss", 0) for s in ask["stages"])
    real_peak = real["memory"].get("peak_rss")
    last = serve["stages"][-1]
    rows = [table_row("memory: cold rag ask, peak RSS (stage child / real process)",
                      f"{fmt_bytes(ask_peak)} / {fmt_bytes(real_peak)}", ask["backend"], None,
                      f"<= {fmt_bytes(ASK_TARGET)}", verdict(max(ask_peak, real_peak or 0), ASK_TARGET))]
    for s in ask["stages"]:
        rows.append(table_row(f"memory: cold rag ask, {s['stage'].replace('_', ' ')}",
                              f"{fmt_s(s['seconds'])}, RSS {fmt_bytes(s.get('rss'))}",
                              f"PSS {fmt_bytes(s.get('pss'))}, anon {fmt_bytes(s.get('rss_anon'))}", None, "-", "info"))
    rows.append(table_row("memory: cold rag ask, wall time (real process)", fmt_s(real["seconds"]), "-", None, "-",
                          "info"))
    rows.append(table_row(f"memory: rag serve, RSS after {last['answers']} answers",
                          fmt_bytes(last.get("rss")), f"started {fmt_bytes(serve['stages'][0].get('rss'))}, "
                          f"PSS {fmt_bytes(last.get('pss'))}, torch {'loaded' if serve['torch'] else 'not loaded'}",
                          None, f"<= {fmt_bytes(SERVE_TARGET)}",
                          verdict(last.get("rss", 0), SERVE_TARGET) if last["answers"] >= 10 else "info"))
    return {**result, "rows": rows}


def json_figures(step: dict[str, Any]) -> dict[str, Any]:
    """What ``rag bench --json`` prints for this step: MB (2^20 bytes) and seconds by stage."""
    keys = ("rss", "peak_rss", "pss", "rss_anon", "rss_file")
    ask = [{"stage": s["stage"], "seconds": round(s["seconds"], 3), "torch": s["torch"],
            **{f"{k}_mb": _mb(s.get(k)) for k in keys}} for s in step["ask"]["stages"]]
    serve = [{"stage": s["stage"], **{f"{k}_mb": _mb(s.get(k)) for k in keys}} for s in step["serve"]["stages"]]
    return {"ask_peak_rss_mb": _mb(max(s.get("peak_rss", 0) for s in step["ask"]["stages"])),
            "real_ask_peak_rss_mb": _mb(step["real_ask"]["memory"].get("peak_rss")),
            "real_ask_seconds": round(step["real_ask"]["seconds"], 2),
            "serve_rss_mb": _mb(step["serve"]["stages"][-1].get("rss")), "serve_answers": step["answers"],
            "serve_torch": step["serve"]["torch"], "ask_backend": step["ask"]["backend"],
            "ask_stages": ask, "serve_stages": serve,
            "target_mb": {"serve_rss": _mb(int(SERVE_TARGET)), "ask_peak_rss": _mb(int(ASK_TARGET))}}
