"""Benchmark: the default answer path against the physical limit of the machine it runs on.

On a CPU an answer's time is arithmetic: the prompt's tokens over the prompt-evaluation rate, then
the answer's tokens over the decode rate. This step measures both rates raw, on the bundled model's
own ``llama_cpp.Llama`` (like llama-bench's pp and tg tests: a fresh prompt of ``PP_TOKENS``
evaluated at once, then ``TG_TOKENS`` decoded one at a time), then answers questions with the real
pipeline in a warm process (`rag.answer.answerer.Answerer`: retrieval, verdict, streaming, the support and
entailment checks), today's settings and the settings before evidence sentences and entailment
(`BEFORE`), interleaved question by question so that load drift hits both alike. For each answer:

    limit_ttft  = prompt_tokens / prompt_rate + 1 / decode_rate
    limit_total = prompt_tokens / prompt_rate + answer_tokens / decode_rate

and the ratios pipeline / limit (medians). A ratio under 1 is possible: the pipeline reuses the KV
cache of the fixed system prompt, which the limit counts as paid. Then the llama.cpp knobs, each a
row of its own: the raw prompt rate with flash attention, a larger batch, a q8_0 KV cache.

    rag bench --only answer [--json]

Left out: HTTP backends (their speed is their server's), answer quality (`rag eval run`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eval.bench.figures import Log, fmt_s, loadavg, table_row, verdict
from rag.bundled import CORPUS, DEV_SET, bundled_file
from rag.llm import LlamaCppBackend
from rag.settings import Settings

PP_TOKENS, TG_TOKENS = 256, 64
TTFT_TARGET_S, TOTAL_TARGET_S, LIMIT_RATIO_TARGET = 2.0, 6.0, 1.2
# the answer settings before issue 22 (whole abstracts, no entailment check): the "before" arm
BEFORE = {"evidence": "abstracts", "entailment": "off"}
KNOBS: dict[str, dict[str, Any]] = {"flash attention": {"flash_attn": True}, "n_batch 2048": {"n_batch": 2048},
                                    "KV cache q8_0": {"type_k": 8, "type_v": 8, "flash_attn": True}}


def raw_rates(llama: Any, text: str, rounds: int = 3) -> tuple[float, float]:
    """(prompt tokens/s, decode tokens/s), medians over ``rounds``, measured on ``llama`` directly."""
    tokens = llama.tokenize(text.encode("utf-8"), add_bos=True)[:PP_TOKENS]
    prompt, decode = [], []
    for _ in range(rounds):
        llama.reset()  # no prefix reuse: every token is evaluated
        t0 = time.perf_counter()
        llama.eval(tokens)
        prompt.append(len(tokens) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(TG_TOKENS):  # one token per step, as generation does
            llama.eval([tokens[-1]])
        decode.append(TG_TOKENS / (time.perf_counter() - t0))
    llama.reset()
    return statistics.median(prompt), statistics.median(decode)


def bench_questions(n: int) -> list[str]:
    """The first ``n`` single questions of the development set, in English (the default path's case)."""
    import json

    out = []
    for line in bundled_file(DEV_SET).read_text(encoding="utf-8").splitlines():
        record = json.loads(line) if line.strip() else {}
        if record.get("question") and record.get("lang", "en") == "en":
            out.append(record["question"])
    return out[:n]


def _p95(values: Sequence[float]) -> float:
    return sorted(values)[min(len(values) - 1, round(0.95 * (len(values) - 1)))]


def summarise(rows: list[dict[str, float]], prompt_rate: float, decode_rate: float) -> dict[str, Any]:
    """The figures of one arm from its answers (each with prompt and answer tokens, ttft and total)."""
    generated = [r for r in rows if r["prompt_tokens"]]  # answers the model wrote (not abstentions before it)
    limit_ttft = [r["prompt_tokens"] / prompt_rate + 1 / decode_rate for r in generated]
    limit_total = [r["prompt_tokens"] / prompt_rate + r["answer_tokens"] / decode_rate for r in generated]
    ttft, total = [r["ttft_s"] for r in generated], [r["total_s"] for r in generated]
    med = statistics.median
    out: dict[str, Any] = {"questions": len(rows), "generated": len(generated)}
    if generated:
        out |= {"prompt_tokens_median": med(r["prompt_tokens"] for r in generated),
                "answer_tokens_median": med(r["answer_tokens"] for r in generated),
                "ttft_median_s": med(ttft), "ttft_p95_s": _p95(ttft), "total_median_s": med(total),
                "total_p95_s": _p95(total), "limit_ttft_median_s": med(limit_ttft),
                "limit_total_median_s": med(limit_total), "ratio_ttft": med(ttft) / med(limit_ttft),
                "ratio_total": med(total) / med(limit_total),
                "entail_s_median": med(r["entail_s"] for r in generated),
                "check_s_median": med(r["check_s"] for r in generated)}
    return out


def _answer_row(answer: Any) -> dict[str, float]:
    t = answer.timings
    return {"prompt_tokens": t.get("prompt_tokens", 0.0), "answer_tokens": t.get("generated_tokens", 0.0),
            "ttft_s": t.get("ttft_s", 0.0), "total_s": t.get("total_s", 0.0), "entail_s": t.get("entail_s", 0.0),
            "check_s": t.get("check_s", 0.0)}


def bench_answer(home: Path, n_questions: int = 20, log: Log | None = None,
                 settings: Callable[[Path], Settings] | None = None) -> dict[str, Any]:
    """``rag bench``'s answer step (see the module docstring)."""
    from rag.answer.answerer import Answerer
    from rag.index.embeddings import Embedder

    log = log or (lambda _m: None)
    base = settings(home) if settings else Settings(home=home)
    base = base.model_copy(update={"llm": base.llm.model_copy(update={"backend": "llamacpp"})})
    before = base.model_copy(update={"answer": base.answer.model_copy(update=BEFORE)})
    embedder = Embedder(base.embedding)
    arms = {"after": Answerer(base, embedder=embedder), "before": Answerer(before, embedder=embedder)}
    backend = arms["after"].backend_for()[0]
    assert isinstance(backend, LlamaCppBackend)
    text = " ".join(p.split('"abstract": "', 1)[-1] for p in bundled_file(CORPUS).read_text().splitlines()[:4])
    log("raw llama.cpp rates (prompt evaluation, decode)")
    prompt_rate, decode_rate = raw_rates(backend.llama, text)
    questions = bench_questions(n_questions)
    for arm in arms.values():  # warm: the models, the ONNX session, the system prompt's KV cache
        arm.ask(questions[0])
    load_start = loadavg()
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
    for i, question in enumerate(questions):
        for name in (("after", "before") if i % 2 else ("before", "after")):
            rows[name].append(_answer_row(arms[name].ask(question)))
        log(f"answered {i + 1}/{len(questions)}")
    result: dict[str, Any] = {"answer": {
        "load_average": [load_start, loadavg()], "raw_prompt_tokens_per_s": prompt_rate,
        "raw_decode_tokens_per_s": decode_rate, **summarise(rows["after"], prompt_rate, decode_rate),
                         "before": summarise(rows["before"], prompt_rate, decode_rate)}}
    result["knobs"] = knob_rates(backend, text, prompt_rate, log)
    after, old = result["answer"], result["answer"]["before"]
    result["rows"] = [
        table_row("answer: raw prompt eval / decode (llama.cpp alone)",
                  f"{prompt_rate:.0f} / {decode_rate:.1f} tok/s", "-", None, "-", "info"),
        table_row("answer: time to first token, median", _fmt(after.get("ttft_median_s")),
                  _fmt(old.get("ttft_median_s")), _ratio(after, old, "ttft_median_s"), f"<= {TTFT_TARGET_S:g} s",
                  _met(after.get("ttft_median_s"), TTFT_TARGET_S)),
        table_row("answer: whole checked answer, median", _fmt(after.get("total_median_s")),
                  _fmt(old.get("total_median_s")), _ratio(after, old, "total_median_s"), f"<= {TOTAL_TARGET_S:g} s",
                  _met(after.get("total_median_s"), TOTAL_TARGET_S)),
        table_row("answer: first token / limit", f"{after.get('ratio_ttft', 0):.2f}", "-", None,
                  f"<= {LIMIT_RATIO_TARGET}", _met(after.get("ratio_ttft"), LIMIT_RATIO_TARGET)),
        table_row("answer: total / limit", f"{after.get('ratio_total', 0):.2f}", "-", None,
                  f"<= {LIMIT_RATIO_TARGET}", _met(after.get("ratio_total"), LIMIT_RATIO_TARGET)),
        *(table_row(f"answer knob, raw prompt eval: {name}", f"{rate:.0f} tok/s", f"{prompt_rate:.0f} tok/s",
                    rate / prompt_rate, "-", "info") for name, rate in result["knobs"].items()),
    ]
    result["ours"], result["baseline"] = after.get("total_median_s"), old.get("total_median_s")
    result["ratio"] = _ratio(after, old, "total_median_s")
    result["target"] = f"first token <= {TTFT_TARGET_S:g} s, total <= {TOTAL_TARGET_S:g} s"
    return result


def knob_rates(backend: LlamaCppBackend, text: str, default_rate: float, log: Log) -> dict[str, float]:
    """The raw prompt rate of the bundled model loaded with each of `KNOBS` (the default measured apart)."""
    from llama_cpp import Llama

    out = {}
    for name, params in KNOBS.items():
        log(f"raw prompt rate with {name}")
        try:
            llama = Llama(model_path=str(backend.path), n_ctx=backend.context_window, n_threads=backend.threads,
                          n_threads_batch=backend.threads, verbose=False, **params)
        except Exception:  # noqa: BLE001 - a knob this build lacks is reported missing, not fatal
            continue
        try:
            out[name] = raw_rates(llama, text, rounds=2)[0]
        finally:
            llama.close()
    return out


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else fmt_s(seconds)


def _ratio(after: dict[str, Any], before: dict[str, Any], key: str) -> float | None:
    """after / before of one figure (None when either is missing)."""
    return after[key] / before[key] if after.get(key) and before.get(key) else None


def _met(value: float | None, target: float) -> str:
    return "info" if value is None else verdict(value, target)


__all__ = ["BEFORE", "bench_answer", "raw_rates", "summarise"]
