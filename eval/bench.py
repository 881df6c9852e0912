"""Performance benchmarks: ``rag bench``. Every figure is measured next to a baseline.

One function per measurement, each returning a dict of raw figures (every timing, not only
the summary), the summary ``ours``/``baseline``/``ratio`` and the ``rows`` it adds to the table:

1. `bench_first_ingest`: `rag.ingest.Ingestor` on a fresh data home vs a bare
   ``SentenceTransformer.encode`` of the same chunk texts (same batch size, normalised);
   model loaded in both arms, arms interleaved, medians. Target ratio <= 1.2.
2. `bench_reingest`: re-ingest of the unchanged corpus as a fraction of the first. <= 5%.
3. `bench_retrieval`: warm `Retriever.search` (query embedding included) vs "encode the query
   + one Chroma ``collection.query``" on the same collection; median and p95. Median ratio <= 1.5.
4. `bench_cold_start`: wall time of ``rag search --json``, ``rag ask --backend extractive`` and
   ``rag serve`` (until HTTP answers) as subprocesses, next to ``python -c "import torch"``.
   A command the CLI does not have yet is skipped with a note.
5. `bench_llm_ttft`: ``eval.bench_llm.bench_llm`` (bundled GGUF vs raw llama-cpp) when present.
6. `bench_scale`: synthetic arXiv corpora (`eval.synthetic`) ingested by a child process
   (embedded Chroma, and a ``chroma run`` server at the smallest size): papers/s, peak RSS,
   size on disk, warm retrieval latency; then a linear projection to 2.5M abstracts.
7. `bench_throughput`: embedding chunks/s and chars/s per batch size and backend.
8. `bench_tokenization`: single-threaded tokenization (what sentence-transformers does) vs
   `Embedder`'s parallel Rust-tokenizer path, and that path pipelined with a zero-cost model
   (the ceiling tokenization sets for a GPU ingest). The GPU figure itself is unmeasured here.
9. `bench_api`: ``eval.bench_api.measure``: a non-streamed extractive answer through a running
   ``rag api`` vs the same answer in-process (target <= 1.1x), time to the first streamed byte,
   and 20 concurrent streaming clients (answered, 429s retried, p95).

`run_bench` runs them, prints a rich table (measurement, ours, baseline, ratio, target,
pass/miss), and writes ``bench.json`` and ``bench.png`` into a run folder (default
``runs/bench-<timestamp>``); ``bench.json`` is rewritten after every step, so an interrupted
run keeps what it measured. Machines differ: nothing here is a test threshold.

Left out: answer quality (``rag eval``), GPU measurements on machines without one, and
multi-node Chroma deployments.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.bundled import CORPUS, DEV_SET, bundled_file
from rag.errors import InputError
from rag.models import BUNDLED as BUNDLED_MODELS
from rag.settings import Settings
from rag.testing import free_port, stop_process, wait_for_http

BUNDLED = bundled_file(CORPUS)
DEV = bundled_file(DEV_SET)
BIN = Path(sys.executable).parent
PROJECT_TARGET = 2_500_000  # abstracts: the arXiv snapshot's order of magnitude

TTFT_TARGET_S = 3.0  # bundled LLM, median time to first token on this machine
SAME_VECTORS_COSINE = 0.999  # a backend below this (worst cosine to torch) changes retrieval: not recommended
LLM_SWEEP = (300, 450, 600, 900)  # prompt sizes (tokens) for the time-to-first-token sweep
TARGETS = {"first_ingest": 1.2, "reingest": 0.05, "retrieval": 1.5, "tokenization": 3.0, "api": 1.1}
ONNX_NOTE = ("sentence-transformers[onnx] needs optimum-onnx, whose releases on PyPI (<= 0.1.0) require "
             "transformers<4.58; this project pins transformers 5.24.0 "
             "(ONNX Runtime on our own export is measured instead)")
OPENVINO_NOTE = ("sentence-transformers[openvino] needs optimum-intel>=2: 2.2.0 requires transformers<5.6, "
                 "2.0-2.1 require safetensors<0.8; this project pins transformers 5.24.0, safetensors 0.8.0")

Log = Callable[[str], None]


# ---------------------------------------------------------------- small helpers


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def p95(xs: Sequence[float]) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), 95)) if xs else float("nan")


def _row(measurement: str, ours: str, baseline: str, ratio: float | None, target: str,
         status: str) -> dict[str, Any]:
    return {"measurement": measurement, "ours": ours, "baseline": baseline,
            "ratio": None if ratio is None else round(float(ratio), 4), "target": target, "status": status}


def _verdict(ratio: float, target: float, higher_is_better: bool = False) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return "pass" if ok else "miss"


def _skipped(name: str, note: str) -> dict[str, Any]:
    return {"skipped": True, "note": note, "rows": [_row(name, "-", "-", None, "-", "skipped")]}


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def du(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when absent)."""
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_settings(base: Settings, home: Path, chroma_url: str | None = None) -> Settings:
    """``base`` with another data home and store location."""
    store = base.store.model_copy(update={"chroma_url": chroma_url})
    return base.model_copy(update={"home": Path(home), "store": store})


def bench_queries(n: int = 50, corpus: Path = BUNDLED) -> list[str]:
    """About ``n`` varied queries: dev-set questions of every type and language, title
    fragments, and short keyword queries."""
    questions: list[str] = []
    if DEV.exists():
        for line in DEV.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            for turn in record.get("turns", [record]):
                questions.append(turn["question"])
    titles = [json.loads(line)["title"] for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    keywords = ["retrieval augmented generation", "diffusion model image editing", "RLHF reward model",
                "mixture of experts routing", "long context attention", "quantization LLM inference",
                "graph neural networks", "speech recognition low resource", "protein structure",
                "multi-agent reinforcement learning", "code generation benchmark", "vision language model"]
    n_q = max(1, n * 6 // 10)
    n_t = max(1, n * 2 // 10)
    picked = questions[:: max(1, len(questions) // n_q)][:n_q] if questions else []
    picked += [" ".join(t.split()[:6]) for t in titles[:: max(1, len(titles) // n_t)][:n_t]]
    picked += keywords[: max(0, n - len(picked))]
    i = 0
    while len(picked) < n and titles:  # tiny corpora: top up with more titles
        picked.append(titles[i % len(titles)])
        i += 1
    return picked[:n]


def parse_sizes(text: str) -> list[int]:
    """``"10000,30_000"`` -> ``[10000, 30000]``; raises `InputError` on anything else."""
    try:
        sizes = [int(part.strip().replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise InputError(f"--scale {text!r} is not a list of paper counts", "use e.g. --scale 10000,30000,100000")
    return sizes


def parse_steps(only: str) -> set[str]:
    """``--only scale,llm`` -> the steps to skip; an unknown name is an input error."""
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    unknown = wanted - set(STEPS)
    if unknown or not wanted:
        raise InputError(f"unknown bench step(s): {', '.join(sorted(unknown)) or repr(only)}",
                         f"choose from {', '.join(STEPS)}")
    return set(STEPS) - wanted


def _loadavg() -> float | None:
    """The 1-minute load average: other work on the machine skews every figure taken meanwhile."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _machine() -> dict[str, Any]:
    import torch

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": cpus,
            "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


# ---------------------------------------------------------------- 1, 2: ingest


def _chunk_texts(embedder: Any, settings: Settings, corpus: Sequence[Path]) -> tuple[int, list[str]]:
    from rag.chunking import Chunker
    from rag.corpus import load_paths

    papers = list(load_paths(corpus).papers.values())
    cfg = settings.chunking
    chunks = Chunker(embedder, cfg.max_tokens, cfg.include_title).chunk(papers)
    return len(papers), [c.embed_text for c in chunks]


def bench_first_ingest(embedder: Any, base: Settings, corpus: Sequence[Path], work: Path, rounds: int = 3,
                       log: Log = print) -> dict[str, Any]:
    """Ingest into a fresh data home vs bare ``model.encode`` of the same chunk texts, interleaved."""
    from rag.corpus import LoadReport, load_paths
    from rag.ingest import Ingestor

    n_papers, texts = _chunk_texts(embedder, base, corpus)
    size = base.embedding.batch_size
    embedder.model.encode(texts[:8], batch_size=size, normalize_embeddings=True, show_progress_bar=False)  # warm
    # warm the ingest path too (chromadb import and first client, bm25s): imports are not ingest
    warm = LoadReport(papers=dict(list(load_paths(corpus).papers.items())[:2]))
    Ingestor(bench_settings(base, work / "warm-up"), embedder=embedder).run(report=warm)
    ingest_s: list[float] = []
    encode_s: list[float] = []
    homes: list[str] = []
    summaries: list[dict[str, Any]] = []
    for r in range(rounds):
        for arm in (("ingest", "encode") if r % 2 == 0 else ("encode", "ingest")):
            log(f"first ingest: round {r + 1}/{rounds}, {arm}")
            if arm == "ingest":
                home = work / f"ingest-{r}"
                shutil.rmtree(home, ignore_errors=True)
                start = time.perf_counter()
                summary = Ingestor(bench_settings(base, home), embedder=embedder).run(list(corpus))
                ingest_s.append(time.perf_counter() - start)
                homes.append(str(home))
                summaries.append({k: v for k, v in summary.as_dict().items() if k not in ("errors", "merges")})
            else:
                start = time.perf_counter()
                embedder.model.encode(texts, batch_size=size, normalize_embeddings=True, convert_to_numpy=True,
                                      show_progress_bar=False)
                encode_s.append(time.perf_counter() - start)
    ours, baseline = median(ingest_s), median(encode_s)
    ratio = ours / baseline
    target = TARGETS["first_ingest"]
    name = f"first ingest ({n_papers} papers, {len(texts)} chunks)"
    return {"papers": n_papers, "chunks": len(texts), "chars": sum(map(len, texts)), "batch_size": size,
            "rounds": rounds, "ingest_s": ingest_s, "encode_s": encode_s, "summaries": summaries, "homes": homes,
            "ours": ours, "baseline": baseline, "ratio": ratio, "target": target,
            "rows": [_row(name, _fmt_s(ours), f"{_fmt_s(baseline)} bare encode", ratio, f"<= {target}",
                          _verdict(ratio, target))]}


def bench_reingest(embedder: Any, base: Settings, corpus: Sequence[Path], homes: Sequence[str],
                   first_ingest_s: float, log: Log = print) -> dict[str, Any]:
    """Ingest of the unchanged corpus into each already-built home, as a fraction of the first ingest."""
    from rag.ingest import Ingestor

    times: list[float] = []
    embedded: list[int] = []
    for i, home in enumerate(homes):
        log(f"re-ingest: {i + 1}/{len(homes)}")
        start = time.perf_counter()
        summary = Ingestor(bench_settings(base, Path(home)), embedder=embedder).run(list(corpus))
        times.append(time.perf_counter() - start)
        embedded.append(summary.chunks_embedded)
    ours = median(times)
    ratio = ours / first_ingest_s
    target = TARGETS["reingest"]
    return {"reingest_s": times, "chunks_embedded": embedded, "ours": ours, "baseline": first_ingest_s,
            "ratio": ratio, "target": target,
            "rows": [_row("re-ingest, unchanged corpus", _fmt_s(ours), f"{_fmt_s(first_ingest_s)} first ingest",
                          ratio, f"<= {target:.0%}", _verdict(ratio, target))]}


# ---------------------------------------------------------------- 3: retrieval


def bench_retrieval(embedder: Any, base: Settings, home: Path, queries: Sequence[str], passes: int = 3,
                    chroma_url: str | None = None, log: Log = print) -> dict[str, Any]:
    """Warm hybrid search vs bare query encode + one ``collection.query``, interleaved per query."""
    from rag.retrieval import Retriever

    settings = bench_settings(base, home, chroma_url)
    retriever = Retriever(settings, embedder=embedder)
    collection = retriever.store.collection()
    n = min(settings.retrieval.candidates, collection.count())

    def bare(query: str) -> None:
        vector = embedder.model.encode([query], normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False)[0]
        collection.query(query_embeddings=[vector.tolist()], n_results=n, include=["distances"])

    for q in queries[:3]:  # warm both paths: lexical index loaded, caches filled
        retriever.search(q)
        bare(q)
    ours: list[float] = []
    baseline: list[float] = []
    stages: dict[str, list[float]] = {}
    log(f"retrieval: {len(queries)} queries x {passes} passes")
    for p in range(passes):
        for i, q in enumerate(queries):
            for arm in (("ours", "bare") if (i + p) % 2 == 0 else ("bare", "ours")):
                start = time.perf_counter()
                if arm == "ours":
                    result = retriever.search(q)
                    ours.append(time.perf_counter() - start)
                    for key, value in result.timings.items():
                        stages.setdefault(key, []).append(value)
                else:
                    bare(q)
                    baseline.append(time.perf_counter() - start)
    med_o, med_b, p95_o, p95_b = median(ours), median(baseline), p95(ours), p95(baseline)
    ratio = med_o / med_b
    target = TARGETS["retrieval"]
    return {"queries": len(queries), "passes": passes, "candidates": n, "ours_s": ours, "baseline_s": baseline,
            "ours": med_o, "baseline": med_b, "ours_p95": p95_o, "baseline_p95": p95_b, "ratio": ratio,
            "ratio_p95": p95_o / p95_b, "target": target,
            "stages_median_ms": {k: round(median(v) * 1000, 3) for k, v in stages.items()},
            "rows": [_row("warm retrieval, median", f"{med_o * 1000:.1f} ms", f"{med_b * 1000:.1f} ms encode+query",
                          ratio, f"<= {target}", _verdict(ratio, target)),
                     _row("warm retrieval, p95", f"{p95_o * 1000:.1f} ms", f"{p95_b * 1000:.1f} ms encode+query",
                          p95_o / p95_b, "-", "info")]}


# ---------------------------------------------------------------- 9: the API


def api_questions(n: int = 10) -> list[str]:
    """The first ``n`` English single-turn development questions (answerable ones)."""
    out = []
    for line in DEV.read_text(encoding="utf-8").splitlines() if DEV.exists() else []:
        record = json.loads(line) if line.strip() else {}
        if record.get("question") and record.get("gold") and record.get("lang", "en") == "en":
            out.append(record["question"])
    return out[:n] or ["How many parameters does Skywork-MoE have?"]


def bench_api(home: Path, embedder: Any, rounds: int = 3, clients: int = 20, log: Log = print) -> dict[str, Any]:
    """`eval.bench_api.measure` on ``home`` as rows: API vs in-process, first byte, concurrent clients."""
    from eval.bench_api import measure

    raw = measure(home, api_questions(), embedder, rounds=rounds, clients=clients, log=log)
    api_med, local_med = median(raw["api_s"]), median(raw["in_process_s"])
    ratio, target = api_med / local_med, TARGETS["api"]
    first_byte = [s["first_byte_s"] for s in raw["stream"] if s["first_byte_s"] is not None]
    first_text = [s["first_text_s"] for s in raw["stream"] if s["first_text_s"] is not None]
    local_first = median(raw["in_process_first_token_s"])
    rows = [_row("API non-streamed answer (extractive), median", f"{api_med * 1000:.1f} ms",
                 f"{local_med * 1000:.1f} ms in-process", ratio, f"<= {target}", _verdict(ratio, target)),
            _row("API streamed: first byte, median", f"{median(first_byte) * 1000:.1f} ms",
                 f"{local_first * 1000:.1f} ms in-process first token", median(first_byte) / local_first, "-",
                 "info"),
            _row("API streamed: first answer text, median", f"{median(first_text) * 1000:.1f} ms",
                 f"{local_first * 1000:.1f} ms in-process first token", median(first_text) / local_first, "-",
                 "info")]
    for run in raw["concurrent"]:
        totals = [r["total_s"] for r in run["results"] if r.get("ok")]
        rows.append(_row(f"{run['clients']} concurrent streams, bound {run['bound']}: p95 "
                         f"({run['answered']}/{run['clients']} answered, {run['refused_429']} x 429 retried)",
                         f"{p95(totals):.2f} s", f"{median(totals):.2f} s median, {max(totals, default=0):.2f} s max",
                         None, "all answered", "pass" if run["answered"] == run["clients"] else "miss"))
    summary = {"ours": api_med, "baseline": local_med, "ratio": ratio, "target": target,
               "first_byte_median_s": median(first_byte), "first_text_median_s": median(first_text),
               "in_process_first_token_median_s": local_first,
               "concurrent": [{"clients": c["clients"], "bound": c["bound"], "answered": c["answered"],
                               "refused_429": c["refused_429"], "wall_s": c["wall_s"],
                               "p95_s": p95([r["total_s"] for r in c["results"] if r.get("ok")]),
                               "median_s": median([r["total_s"] for r in c["results"] if r.get("ok")])}
                              for c in raw["concurrent"]]}
    return {**summary, "raw": raw, "rows": rows}


# ---------------------------------------------------------------- 4: cold start


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
    rows = [_row("cold start: python -c 'import torch'", _fmt_s(torch_s), "-", None, "-", "info")]
    for name in ("rag search", "rag search (torch query path)", "rag ask (extractive)", "rag serve (until HTTP)"):
        if times.get(name):
            m = median(times[name])
            rows.append(_row(f"cold start: {name}", _fmt_s(m), f"{_fmt_s(torch_s)} import torch", m / torch_s, "-",
                             "info"))
        else:
            rows.append(_row(f"cold start: {name}", "-", "-", None, "-", "skipped"))
    return {"rounds": rounds, "times_s": times, "medians_s": {k: median(v) for k, v in times.items() if v},
            "notes": notes, "ours": median(times["rag search"]), "baseline": torch_s,
            "ratio": median(times["rag search"]) / torch_s if times["rag search"] else None, "rows": rows}


# ---------------------------------------------------------------- 5: LLM


def bench_llm_ttft(runs: int = 3, log: Log = print) -> dict[str, Any]:
    """The bundled LLM's time to first token through our backend vs raw llama-cpp-python."""
    import importlib.util

    name = "bundled LLM time to first token"
    if importlib.util.find_spec("eval.bench_llm") is None:
        return _skipped(name, "eval/bench_llm.py does not exist yet")
    try:
        from eval import bench_llm as module

        budget = Settings().llm.llamacpp_prompt_tokens  # what `rag ask --backend llamacpp` sends at most
        log(f"LLM: {runs} interleaved runs of eval.bench_llm at the {budget}-token prompt budget")
        res = module.bench_llm(module.corpus_prompt(budget), runs)
        log("LLM: time to first token by prompt size")
        sweep = module.prompt_sweep(LLM_SWEEP, runs)
    except Exception as err:  # noqa: BLE001 - llama-cpp or the model missing: a note, not a failure
        return _skipped(name, f"eval.bench_llm failed: {type(err).__name__}: {err}"[:400])
    ours, baseline = res["backend"]["ttft_s"], res["raw"]["ttft_s"]
    ratio = res.get("ratio", {}).get("ttft", ours / baseline)
    fits = [p for p in sweep if p["ttft_s"] < TTFT_TARGET_S]
    largest = max(fits, key=lambda p: p["prompt_tokens"]) if fits else None
    rows = [_row(f"{name} ({res.get('prompt_tokens', '?')}-token prompt)", _fmt_s(ours),
                 f"{_fmt_s(baseline)} raw llama-cpp", ratio, "<= 1.1", _verdict(ratio, 1.1)),
            _row(f"bundled LLM time to first token at the {budget}-token budget", _fmt_s(ours),
                 f"{TTFT_TARGET_S:.0f} s target", ours / TTFT_TARGET_S, "<= 1.0", _verdict(ours / TTFT_TARGET_S, 1.0)),
            _row("bundled LLM decode speed", f"{res['backend']['tok_s']:.1f} tok/s",
                 f"{res['raw']['tok_s']:.1f} tok/s raw", res.get("ratio", {}).get("tok_s"), "-", "info"),
            _row("bundled LLM TTFT by prompt size",
                 ", ".join(f"{p['prompt_tokens']}: {p['ttft_s']:.1f} s" for p in sweep),
                 f"largest under {TTFT_TARGET_S:.0f} s: {largest['prompt_tokens'] if largest else 'none'} tokens",
                 None, "-", "info")]
    per_model = []
    for bundled in [m for m in BUNDLED_MODELS.values() if m.installed()]:
        log(f"LLM: {bundled.name}: cold prompt, shared-prefix reuse and prompt-lookup decoding")
        try:
            t = module.techniques(bundled.name, module.corpus_prompt(budget), runs)
        except Exception as err:  # noqa: BLE001
            log(f"LLM: {bundled.name} skipped: {type(err).__name__}: {err}")
            continue
        per_model.append(t)
        cold = t["cold"]
        rows += [
            _row(f"{bundled.name}: TTFT / decode, cold {t['prompt_tokens']}-token prompt",
                 f"{_fmt_s(cold['ttft_s'])} / {cold['tok_s']:.1f} tok/s", "-", None, "-", "info"),
            _row(f"{bundled.name}: answer after the verdict (KV prefix reused)",
                 f"{_fmt_s(t['prefix']['ttft_s'])} TTFT", f"{_fmt_s(cold['ttft_s'])} cold",
                 t["ratio"]["prefix"]["ttft"], "-", "info"),
            _row(f"{bundled.name}: prompt-lookup decoding ({t['draft_tokens']} draft tokens)",
                 f"{t['lookup']['tok_s']:.1f} tok/s", f"{cold['tok_s']:.1f} tok/s plain",
                 t["ratio"]["lookup"]["tok_s"], ">= 1.0 to turn it on",
                 _verdict(t["ratio"]["lookup"]["tok_s"], 1.0, higher_is_better=True))]
    return {"result": res, "ours": ours, "baseline": baseline, "ratio": ratio, "budget": budget, "sweep": sweep,
            "largest_prompt_under_target": largest["prompt_tokens"] if largest else None,
            "techniques": per_model, "rows": rows}


# ---------------------------------------------------------------- 6: scale


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
    proc = subprocess.Popen([sys.executable, "-m", "eval.bench", "--child", str(spec_path)])
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
                      f"~{_fmt_bytes(out['disk_bytes']['projected'])} on disk, peak RSS "
                      f"~{_fmt_bytes(out['peak_rss_bytes']['projected'])} (linear; HNSW inserts grow ~log N, "
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
            load_before = _loadavg()
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
                     "loadavg_1min": [load_before, _loadavg()]}
            points.append(point)
            log(f"scale: {label}: {point['papers_per_s']:.1f} papers/s, peak RSS {_fmt_bytes(child_peak)}, "
                f"disk {_fmt_bytes(disk)}, retrieval {point['retrieval_median_ms']:.1f} ms median")
            if on_point:
                on_point(point)
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(server_path, ignore_errors=True)
    projection = project(points)
    rows = []
    for p in points:
        rss = _fmt_bytes(p["peak_rss_bytes"]) + (f" + server {_fmt_bytes(p['server_peak_rss_bytes'])}"
                                                 if p["server_peak_rss_bytes"] else "")
        rows.append(_row(f"scale {p['papers']:,} papers ({p['mode']})", f"{p['papers_per_s']:.1f} papers/s",
                         f"RSS {rss}, disk {_fmt_bytes(p['disk_bytes'])}, retrieval "
                         f"{p['retrieval_median_ms']:.0f}/{p['retrieval_p95_ms']:.0f} ms (median/p95), "
                         f"load {'->'.join(str(x) for x in p['loadavg_1min'])}", None, "-",
                         "info"))
    if projection:
        rows.append(_row(f"projection: {PROJECT_TARGET:,} abstracts",
                         f"{projection['ingest_s']['projected'] / 3600:.0f} h",
                         f"disk {_fmt_bytes(projection['disk_bytes']['projected'])}, RSS "
                         f"{_fmt_bytes(projection['peak_rss_bytes']['projected'])}", None, "-", "info"))
    return {"sizes": list(sizes), "server_sizes": server_sizes, "points": points, "projection": projection,
            "rows": rows}


# ---------------------------------------------------------------- 7: throughput


def bench_throughput(embedder: Any, texts: Sequence[str], work: Path,
                     batch_sizes: Sequence[int] = (16, 32, 64, 128),
                     backends: Sequence[str] = ("torch", "onnx", "openvino"), rounds: int = 3,
                     log: Log = print) -> dict[str, Any]:
    """chunks/s and chars/s per (backend, batch size), configurations interleaved per round.
    sentence-transformers' ONNX/OpenVINO backends when installable; ONNX Runtime on our own
    export (fp32, int8) always, with its worst cosine to torch's vectors."""
    from sentence_transformers import SentenceTransformer

    texts = list(texts)
    chars = sum(map(len, texts))
    models: dict[str, Any] = {"torch": embedder.model}
    notes: dict[str, str] = {}
    for backend in backends:
        if backend == "torch":
            continue
        try:
            models[backend] = SentenceTransformer(str(embedder.path), backend=backend, local_files_only=True,
                                                  device=embedder.settings.device)
        except Exception as err:  # noqa: BLE001 - an uninstallable backend is a finding, not a crash
            why = ONNX_NOTE if backend == "onnx" else OPENVINO_NOTE
            notes[backend] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]} ({why})"
    quality: dict[str, float] = {}
    for name, model in _ort_models(embedder, texts, work, notes).items():
        models[name] = model
        quality[name] = _min_cosine(embedder.model, model, texts)
    default_bs = embedder.settings.batch_size
    configs = [(b, bs) for b in models for bs in (batch_sizes if b == "torch" else [default_bs])]
    for model in models.values():
        model.encode(texts[:8], normalize_embeddings=True, show_progress_bar=False)
    times: dict[str, list[float]] = {f"{b}/{bs}": [] for b, bs in configs}
    for r in range(rounds):
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        for backend, bs in order:
            log(f"throughput: round {r + 1}/{rounds}, {backend} batch {bs}")
            start = time.perf_counter()
            models[backend].encode(texts, batch_size=bs, normalize_embeddings=True, convert_to_numpy=True,
                                   show_progress_bar=False)
            times[f"{backend}/{bs}"].append(time.perf_counter() - start)
    results = []
    for backend, bs in configs:
        m = median(times[f"{backend}/{bs}"])
        results.append({"backend": backend, "batch_size": bs, "seconds": times[f"{backend}/{bs}"],
                        "chunks_per_s": len(texts) / m, "chars_per_s": chars / m})
    ref = next((r for r in results if r["backend"] == "torch" and r["batch_size"] == default_bs), results[0])
    # a backend whose vectors differ from torch's (int8) would need a quality eval first: not a candidate
    same_vectors = [r for r in results if quality.get(r["backend"], 1.0) >= SAME_VECTORS_COSINE]
    best = max(same_vectors, key=lambda r: r["chunks_per_s"])
    margin = best["chunks_per_s"] / ref["chunks_per_s"] - 1
    separated = max(best["seconds"]) < min(ref["seconds"])  # its slowest round beat the default's fastest
    if best is ref or margin < 0.05 or not separated:
        pick = ref
        reason = (f"keep {ref['backend']}/batch {ref['batch_size']}: the best configuration "
                  f"({best['backend']}/batch {best['batch_size']}) is {margin:+.1%} faster, within noise "
                  f"(needs +5% and every round faster)")
    else:
        pick = best
        reason = (f"{best['backend']}/batch {best['batch_size']} is {margin:+.1%} faster than the current default, "
                  "every round")
    rows = [_row(f"embedding {r['backend']}, batch {r['batch_size']}", f"{r['chunks_per_s']:.1f} chunks/s",
                 f"{ref['chunks_per_s']:.1f} chunks/s at {ref['backend']}/{ref['batch_size']}"
                 + (f"; min cosine to torch {quality[r['backend']]:.4f}" if r["backend"] in quality else ""),
                 r["chunks_per_s"] / ref["chunks_per_s"], "-", "info") for r in results]
    rows += [_row(f"embedding {b} backend", "-", "-", None, "-", "skipped") for b in notes]
    query = _query_latency(embedder, models.get("onnxruntime"), texts, rounds)
    if query:
        rows.append(_row("one query embedded: onnxruntime", f"{query['onnx_ms']:.1f} ms",
                         f"{query['torch_ms']:.1f} ms torch (sentence-transformers encode)",
                         query["onnx_ms"] / query["torch_ms"], "-", "info"))
    return {"texts": len(texts), "chars": chars, "rounds": rounds, "results": results, "notes": notes,
            "min_cosine_to_torch": quality, "query_latency": query,
            "recommendation": {"backend": pick["backend"], "batch_size": pick["batch_size"], "reason": reason},
            "rows": rows}


class _OrtModel:
    """A sentence-transformers-like ``encode`` over one ONNX Runtime export of the embedder
    (batches of the embedder's ``batch_size``, the only size the sweep runs other backends at)."""

    def __init__(self, embedder: Any, path: Path) -> None:
        from rag.onnx_encoder import OnnxEncoder

        self.embedder, self.encoder = embedder, OnnxEncoder(path)

    def encode(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        return self.embedder._encode_onnx(list(texts), self.encoder)


def _ort_models(embedder: Any, texts: Sequence[str], work: Path, notes: dict[str, str]) -> dict[str, Any]:
    """ONNX Runtime on our export (rag.onnx_encoder), fp32 and int8 (dynamic quantisation):
    what sentence-transformers' own ONNX backend would run, without its optimum pin."""
    path = embedder._onnx_path
    if path is None:
        notes["onnxruntime"] = "RAG_EMBEDDING__ONNX_QUERIES is off"
        return {}
    if not path.is_file():
        embedder._export_onnx(list(texts[:8]))
    if not path.is_file():
        notes["onnxruntime"] = "the ONNX export failed (see the log)"
        return {}
    models = {"onnxruntime": _OrtModel(embedder, path)}
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8 = work / "embedder-int8.onnx"
        quantize_dynamic(str(path), str(int8), weight_type=QuantType.QInt8)
        models["onnxruntime-int8"] = _OrtModel(embedder, int8)
    except Exception as err:  # noqa: BLE001 - a finding, not a crash
        notes["onnxruntime-int8"] = f"{type(err).__name__}: {str(err)[:160]}"
    return models


def _min_cosine(reference: Any, model: Any, texts: Sequence[str]) -> float:
    """The worst cosine between a backend's vectors and torch's on the same texts."""
    a = reference.encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
    b = model.encode(list(texts))
    return float((a * b).sum(axis=1).min())


def _query_latency(embedder: Any, ort: Any, texts: Sequence[str], rounds: int) -> dict[str, float] | None:
    """Median time to embed one query (a chunk's first 80 characters) with torch and with ONNX Runtime."""
    if ort is None:
        return None
    queries = [t[:80] for t in texts[:40]]
    torch_s, onnx_s = [], []
    for _ in range(rounds):
        for q in queries:
            start = time.perf_counter()
            embedder.model.encode([q], normalize_embeddings=True, show_progress_bar=False)
            torch_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            ort.encode([q])
            onnx_s.append(time.perf_counter() - start)
    return {"queries": len(queries) * rounds, "torch_ms": median(torch_s) * 1000, "onnx_ms": median(onnx_s) * 1000}


# ---------------------------------------------------------------- 8: tokenization


class _NullModel:
    """Stands in for an infinitely fast accelerator."""

    device = "cpu"

    def eval(self) -> _NullModel:
        return self


def bench_tokenization(embedder: Any, n_texts: int = 20_000, rounds: int = 2, workers: int | None = None,
                       corpus: Path = BUNDLED, log: Log = print) -> dict[str, Any]:
    """Abstracts/s: sentence-transformers' single-threaded tokenization vs the parallel path,
    and the pipelined encode with a zero-cost model (what tokenization leaves for a GPU)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from rag.embeddings import Embedder

    abstracts = [json.loads(line)["abstract"] for line in corpus.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    texts = (abstracts * (n_texts // len(abstracts) + 1))[:n_texts]
    size = embedder.settings.batch_size
    batches = [texts[i:i + size] for i in range(0, len(texts), size)]
    workers = workers or embedder.tokenizer_workers
    model = embedder.model

    null = Embedder(embedder.settings)
    null.__dict__.update(model=_NullModel(), dim=embedder.dim, tokenizer=embedder.tokenizer)
    null.tokenizer_workers, null.pipelined = workers, True
    null._forward = lambda f: torch.zeros((f["input_ids"].shape[0], embedder.dim))  # type: ignore[method-assign]

    def single() -> None:
        for batch in batches:
            model.preprocess(batch)

    def ours_single() -> None:
        for batch in batches:
            embedder.features(batch)

    def parallel() -> None:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(embedder.features, batches):
                pass

    def pipeline() -> None:
        null.encode(texts)

    arms = {"single": single, "ours_single_thread": ours_single, "parallel": parallel, "pipeline_null_model": pipeline}
    single()  # warm every tokenizer copy
    times: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(rounds):
        names = list(arms)
        for name in names[r % len(names):] + names[: r % len(names)]:
            log(f"tokenization: round {r + 1}/{rounds}, {name} ({len(texts):,} abstracts)")
            start = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - start)
    rate = {k: len(texts) / median(v) for k, v in times.items()}

    sample = texts[:32]  # the parallel path gives sentence-transformers' vectors
    check = Embedder(embedder.settings)
    check.__dict__.update(model=model, dim=embedder.dim, tokenizer=embedder.tokenizer)
    check.pipelined = True
    diff = float(np.abs(check.encode(sample) - model.encode(sample, batch_size=size, normalize_embeddings=True,
                                                            convert_to_numpy=True, show_progress_bar=False)).max())
    ratio = rate["parallel"] / rate["single"]
    target = TARGETS["tokenization"]
    cpus = embedder.tokenizer_workers
    return {"texts": len(texts), "batch_size": size, "workers": workers, "rounds": rounds, "times_s": times,
            "abstracts_per_s": rate, "max_abs_diff_vs_sentence_transformers": diff,
            "ours": rate["parallel"], "baseline": rate["single"], "ratio": ratio, "target": target,
            "gpu": "unmeasured: no GPU on this machine",
            "rows": [_row(f"tokenization, {workers} threads vs 1 ({cpus} CPUs)", f"{rate['parallel']:.0f} abstracts/s",
                          f"{rate['single']:.0f} abstracts/s single-thread", ratio, f">= {target} (GPU ingest)",
                          _verdict(ratio, target, higher_is_better=True)),
                     _row("tokenization, pipelined encode with a zero-cost model",
                          f"{rate['pipeline_null_model']:.0f} abstracts/s",
                          f"{rate['single']:.0f} abstracts/s single-thread",
                          rate["pipeline_null_model"] / rate["single"], "-", "info"),
                     _row("tokenization, Rust tokenizer single-thread", f"{rate['ours_single_thread']:.0f} abstracts/s",
                          f"{rate['single']:.0f} abstracts/s via preprocess",
                          rate["ours_single_thread"] / rate["single"], "-", "info")]}


# ---------------------------------------------------------------- output


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


# ---------------------------------------------------------------- runner


STEPS = ("first_ingest", "reingest", "retrieval", "cold_start", "llm", "scale", "throughput", "tokenization", "api")


def run_bench(out: str | Path | None = None, scale: Sequence[int] = (10_000, 30_000), quick: bool = False,
              device: str | None = None, corpus: Sequence[str | Path] | None = None, rounds: int = 3,
              n_queries: int = 50, skip: Sequence[str] = (), tokenize_texts: int | None = None,
              server_scale: Sequence[int] | None = None, console: Any | None = None) -> dict[str, Any]:
    """Run the measurements and write ``bench.json`` and ``bench.png`` into ``out``.

    ``quick`` skips the scale step and the throughput sweep (and tokenizes 4,000 abstracts
    instead of 20,000). ``skip`` names steps (see `STEPS`) to leave out. A step that fails is
    recorded with its error and the run goes on.
    """
    from rich.console import Console

    from rag.embeddings import Embedder

    console = console or Console(stderr=True)
    started = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(out) if out else Path("runs") / f"bench-{started}"
    run_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=run_dir))
    corpus_paths = [Path(p) for p in (corpus or [BUNDLED])]
    base = Settings()
    if device:
        base = base.model_copy(update={"embedding": base.embedding.model_copy(update={"device": device})})
    skip = set(skip) | ({"scale", "throughput"} if quick else set())
    if not scale:
        skip.add("scale")

    def log(message: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", highlight=False)

    results: dict[str, Any] = {"started": started, "device": base.embedding.device, "quick": quick,
                               "corpus": [str(p) for p in corpus_paths], "rounds": rounds,
                               "settings": {"embedding": base.embedding.model_dump(),
                                            "retrieval": base.retrieval.model_dump()},
                               "machine": _machine(), "steps": {}}
    json_path, png_path = run_dir / "bench.json", run_dir / "bench.png"

    def save() -> None:
        json_path.write_text(json.dumps(results, indent=2, default=str))

    log(f"loading the embedder on {base.embedding.device}")
    t0 = time.perf_counter()
    embedder = Embedder(base.embedding)
    embedder.model  # noqa: B018 - loaded once, outside every timing
    results["model_load_s"] = time.perf_counter() - t0
    queries = bench_queries(n_queries, corpus_paths[0] if corpus_paths[0].suffix == ".jsonl" else BUNDLED)
    steps = results["steps"]

    def step(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if name in skip:
            steps[name] = _skipped(name.replace("_", " "), "skipped by request" if not quick else "skipped (--quick)")
            return steps[name]
        log(f"[bold]{name}[/] (load {_loadavg()})")
        load_before = _loadavg()
        try:
            steps[name] = fn()
        except Exception as err:  # noqa: BLE001 - record and go on: one broken step must not lose the rest
            steps[name] = {"error": f"{type(err).__name__}: {err}",
                           "rows": [_row(name.replace("_", " "), "-", "-", None, "-", "error")],
                           "note": f"failed: {type(err).__name__}: {str(err)[:300]}"}
        steps[name]["loadavg_1min"] = [load_before, _loadavg()]
        save()
        return steps[name]

    try:
        first = step("first_ingest", lambda: bench_first_ingest(embedder, base, corpus_paths, work, rounds, log))
        homes = first.get("homes", [])
        if not homes and {"retrieval", "cold_start", "api"} - skip:  # these steps still need an index
            from rag.ingest import Ingestor

            Ingestor(bench_settings(base, work / "ingest-0"), embedder=embedder).run(corpus_paths)
            homes = [str(work / "ingest-0")]
        if "ours" in first:
            step("reingest", lambda: bench_reingest(embedder, base, corpus_paths, homes, first["ours"], log))
        else:
            steps["reingest"] = _skipped("re-ingest", "needs the first-ingest measurement")
        step("retrieval", lambda: bench_retrieval(embedder, base, Path(homes[0]), queries, log=log))
        step("cold_start", lambda: bench_cold_start(Path(homes[0]), queries[0], rounds, device, log=log))
        step("llm", lambda: bench_llm_ttft(rounds, log))
        step("api", lambda: bench_api(Path(homes[0]), embedder, rounds, log=log))
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
                                               on_point=on_point))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        results["finished"] = time.strftime("%Y%m%d-%H%M%S")
        results["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        save()
    plot(results, png_path)
    print_table(results, console)
    console.print(f"wrote {json_path} and {png_path}", highlight=False)
    results["run_dir"] = str(run_dir)
    return results


def _throughput_sample(embedder: Any, base: Settings, corpus: Sequence[Path], n: int = 128) -> list[str]:
    """A fixed random sample of the corpus's chunk texts (all of them when fewer)."""
    import random

    _, texts = _chunk_texts(embedder, base, corpus)
    return random.Random(0).sample(texts, min(n, len(texts)))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _scale_child(sys.argv[2])
    else:
        run_bench(quick="--quick" in sys.argv)
