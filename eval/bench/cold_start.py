"""``rag bench`` step 4: cold start of ``rag search``, ``rag ask`` and ``rag serve`` as subprocesses.

`bench_cold_start`: wall time of ``rag search --json``, ``rag ask --backend extractive`` and
``rag serve`` (until HTTP answers), interleaved with ``python -c "import torch"`` in the same run.
A command the CLI does not have is skipped with a note. Left out: warm latency (`eval.bench.retrieval`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eval.bench.figures import BIN, Log, fmt_s, median, table_row
from rag.testing import free_port, stop_process, wait_for_http


def _has_command(name: str, option: str) -> bool:
    try:
        got = subprocess.run([str(BIN / "rag"), name, "--help"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return got.returncode == 0 and option in got.stdout


def _time_serve(env: dict[str, str], timeout: float) -> tuple[float | None, str]:
    port = free_port()
    with tempfile.TemporaryFile() as log_file:
        proc = subprocess.Popen([str(BIN / "rag"), "serve", "--host", "127.0.0.1", "--port", str(port)],
                                env={**env, "RAG_UI__PORT": str(port)}, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        start = time.perf_counter()
        try:
            wait_for_http(f"http://127.0.0.1:{port}/", timeout, proc)
            ok, elapsed = True, time.perf_counter() - start
        except (RuntimeError, TimeoutError):
            ok, elapsed = False, 0.0
        finally:
            stop_process(proc, grace=15)
        if ok:
            return elapsed, ""
        log_file.seek(0)
        tail = log_file.read().decode("utf-8", "replace")[-300:]
    return None, f"rag serve did not answer HTTP within {timeout:.0f}s (exit {proc.returncode}): {tail}"


def bench_cold_start(home: Path, query: str, rounds: int = 3, device: str | None = None,
                     serve_timeout: float = 240, log: Log = print) -> dict[str, Any]:
    """Subprocess wall times, interleaved with ``python -c "import torch"`` in the same run."""
    env = {**os.environ, "RAG_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    if device:
        env["RAG_EMBEDDING__DEVICE"] = device
    commands: dict[str, list[str] | None] = {
        "import torch": [sys.executable, "-c", "import torch"],
        "rag search": [str(BIN / "rag"), "search", "--json", query],
        "rag search (torch query path)": [str(BIN / "rag"), "search", "--json", query],
    }
    extra_env = {"rag search (torch query path)": {"RAG_EMBEDDING__ONNX_QUERIES": "false"}}
    notes: dict[str, str] = {}
    if _has_command("ask", "--backend"):
        commands["rag ask (extractive)"] = [str(BIN / "rag"), "ask", "--backend", "extractive", query]
    else:
        notes["rag ask (extractive)"] = "`rag ask --backend` does not exist yet"
    if _has_command("serve", "--port"):
        commands["rag serve (until HTTP)"] = None
    else:
        notes["rag serve (until HTTP)"] = "`rag serve --port` does not exist yet"
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            if name in notes:
                continue
            log(f"cold start: round {r + 1}/{rounds}, {name}")
            cmd = commands[name]
            if cmd is None:
                elapsed, note = _time_serve(env, serve_timeout)
                if elapsed is None:
                    notes[name] = note
                else:
                    times[name].append(elapsed)
                continue
            start = time.perf_counter()
            got = subprocess.run(cmd, env={**env, **extra_env.get(name, {})}, capture_output=True, text=True,
                                 timeout=600)
            elapsed = time.perf_counter() - start
            if got.returncode != 0:
                notes[name] = f"exit {got.returncode}: {(got.stderr or got.stdout)[-300:]}"
            else:
                times[name].append(elapsed)
    torch_s = median(times["import torch"])
    rows = [table_row("cold start: python -c 'import torch'", fmt_s(torch_s), "-", None, "-", "info")]
    for name in ("rag search", "rag search (torch query path)", "rag ask (extractive)", "rag serve (until HTTP)"):
        if times.get(name):
            m = median(times[name])
            rows.append(table_row(f"cold start: {name}", fmt_s(m), f"{fmt_s(torch_s)} import torch", m / torch_s, "-",
                                  "info"))
        else:
            rows.append(table_row(f"cold start: {name}", "-", "-", None, "-", "skipped"))
    return {"rounds": rounds, "times_s": times, "medians_s": {k: median(v) for k, v in times.items() if v},
            "notes": notes, "ours": median(times["rag search"]), "baseline": torch_s,
            "ratio": median(times["rag search"]) / torch_s if times["rag search"] else None, "rows": rows}


