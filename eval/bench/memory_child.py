"""The child process of ``rag bench``'s memory step: a cold ``rag ask``, one stage at a time.

``python eval/bench/memory_child.py SPEC.json`` (run by path, so that importing the ``eval.bench``
package, which loads every bench step, is not counted in the first stage) does what ``rag ask
QUESTION`` does, in the same order, and records after each stage its wall time and memory
(`process_memory`: RSS, PSS, anonymous and file-backed, the high-water mark): ``imports`` (the
CLI and the answer pipeline's modules), ``index_open`` (the `rag.answer.answerer.Answerer`, its store and
lexical index), ``embedder`` (the query embedder: the ONNX session, or torch without an export),
``model_assemble`` (the bundled GGUF assembled from its packages: ~0 s once cached),
``model_load`` (the backend chosen and loaded: llama.cpp's weights, KV cache and buffers) and
``first_answer`` (the whole answer: retrieval, generation, the support check). It also says
whether torch got imported by each stage. Writes the figures to ``SPEC["result"]``. Left out:
starting it, the real ``rag ask`` and ``rag serve`` processes, reporting (`eval.bench.memory`).
"""

from __future__ import annotations

import time

START = time.perf_counter()  # before the imports below: they are part of the first stage

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

STATUS_FIELDS = {"VmRSS": "rss", "VmHWM": "peak_rss", "RssAnon": "rss_anon", "RssFile": "rss_file"}
ROLLUP_FIELDS = {"Pss": "pss", "Pss_Anon": "pss_anon", "Pss_File": "pss_file"}


def process_memory(pid: int) -> dict[str, int]:
    """A process's memory now, in bytes (Linux; ``{}`` elsewhere or once it exited): ``rss`` and its
    high-water mark ``peak_rss`` (VmHWM), ``rss_anon`` / ``rss_file`` (anonymous vs pages of mapped
    files, such as a memory-mapped GGUF, which the kernel can drop and read again), and ``pss``,
    ``pss_anon``, ``pss_file`` from ``smaps_rollup`` (shared pages divided among the processes
    mapping them)."""
    out: dict[str, int] = {}
    for name, fields in (("status", STATUS_FIELDS), ("smaps_rollup", ROLLUP_FIELDS)):
        try:
            text = Path(f"/proc/{pid}/{name}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in fields and value.strip().endswith("kB"):
                out[fields[key]] = int(value.split()[0]) * 1024
    return out


def ask_stages(spec: dict[str, Any]) -> dict[str, Any]:
    """Stages of one cold ``rag ask`` in this process: seconds and memory after each."""
    stages: list[dict[str, Any]] = []
    last = START

    def mark(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        stages.append({"stage": name, "seconds": now - last, "torch": "torch" in sys.modules,
                       **process_memory(os.getpid())})
        last = now

    import rag.cli  # noqa: F401 - what `rag` imports before a command runs
    from rag import models
    from rag.answer.answerer import Answerer
    from rag.llm import generates
    from rag.settings import Settings

    mark("imports")
    settings = Settings()
    answerer = Answerer(settings)
    answerer.retriever.index()
    mark("index_open")
    answerer.embedder.encode_query(spec["question"])
    mark("embedder")
    bundled = models.BUNDLED.get(settings.llm.model or "") or models.best_installed()
    if bundled is not None and settings.llm.backend in ("auto", "llamacpp"):
        bundled.gguf_path(settings.llm.model_dir)
    mark("model_assemble")
    backend, notes = answerer.backend_for()
    mark("model_load")
    answer = answerer.ask(spec["question"])
    mark("first_answer")
    return {"stages": stages, "backend": backend.describe() if generates(backend) else "extractive", "notes": notes,
            "answer_chars": len(answer.answer), "seconds": time.perf_counter() - START}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python eval/bench/memory_child.py SPEC.json")
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]  # run by path: no bench module shadows
    spec = json.loads(Path(sys.argv[1]).read_text())
    Path(spec["result"]).write_text(json.dumps(ask_stages(spec)))
