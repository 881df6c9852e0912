"""Benchmark: the ``llamacpp`` answer backend against raw llama-cpp-python on one prompt.

Measures what the backend's wrapping costs: time to first token (TTFT) and decode speed of
``LlamaCppBackend.stream`` versus ``Llama.create_chat_completion(stream=True)`` called
directly, with the same GGUF, ``n_ctx``, threads, repacking choice and sampling parameters
(greedy by default, so both arms generate the same tokens). Runs are interleaved (backend,
raw, raw, backend, ...) so drift in machine load hits both arms alike; each run starts its
prompt with a unique tag so neither ``Llama`` reuses the previous run's prompt cache, i.e.
TTFT includes evaluating the whole prompt.

    python -m eval.bench.llm            # ~600-token prompt from data/papers.jsonl, 5 runs

`bench_llm_ttft` is ``rag bench``'s step 5: those figures at the configured prompt budget, a
time-to-first-token sweep over prompt sizes, and per bundled model the shared-prefix KV reuse
and prompt-lookup decoding next to a cold prompt.

What this leaves out: HTTP backends (their cost is the server's), answer quality, and
memory. Numbers depend on the machine; nothing here is committed as a threshold.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Iterable, Iterator
from typing import Any

from eval.bench.figures import Log, fmt_s, skipped_step, table_row, verdict
from rag.bundled import CORPUS, bundled_file
from rag.llm import LlamaCppBackend, Message, no_extra_buffers
from rag.models import BUNDLED as BUNDLED_MODELS
from rag.settings import LLMSettings, Settings

TTFT_TARGET_S = 3.0  # bundled LLM, median time to first token on this machine
LLM_SWEEP = (300, 450, 600, 900)  # prompt sizes (tokens) for the time-to-first-token sweep

SYSTEM = "Answer the question using only the numbered papers. Cite papers as [n]."


def _timed(deltas: Iterable[str]) -> tuple[str, float, float, float]:
    """(text, start, first delta, last delta) as perf_counter times; start is taken here."""
    start = time.perf_counter()
    first = last = 0.0
    parts: list[str] = []
    for delta in deltas:
        last = time.perf_counter()
        if not parts:
            first = last
        parts.append(delta)
    return "".join(parts), start, first, last


def _raw_deltas(llama: Any, messages: list[Message], max_tokens: int, temperature: float,
                repeat_penalty: float) -> Iterator[str]:
    for chunk in llama.create_chat_completion(
        messages=[{"role": m.role, "content": m.content} for m in messages],
        stream=True, max_tokens=max_tokens, temperature=temperature, repeat_penalty=repeat_penalty, seed=0,
    ):
        text = chunk["choices"][0]["delta"].get("content")
        if text:
            yield text


def bench_llm(prompt: str, runs: int = 5, *, max_tokens: int = 128, temperature: float = 0.0,
              settings: LLMSettings | None = None) -> dict[str, Any]:
    """Median TTFT (s) and decode tokens/s of the backend and of raw llama-cpp-python.

    Returns ``{"prompt_tokens", "runs", "backend": {...}, "raw": {...}, "ratio": {...}}`` where
    each arm holds ``ttft_s``, ``tok_s`` and ``tokens`` (medians) and ``ratio`` is backend / raw
    (TTFT ratio > 1: the backend is slower to start; tok/s ratio < 1: it decodes slower).
    """
    from llama_cpp import Llama

    settings = settings or LLMSettings()
    backend = LlamaCppBackend(settings)
    backend.check()  # loads (and caches) the backend's Llama
    with contextlib.nullcontext() if backend.repack else no_extra_buffers():
        raw = Llama(model_path=str(backend.path), n_ctx=backend.context_window, n_threads=backend.threads,
                    n_threads_batch=backend.threads, verbose=False)

    def count(text: str) -> int:
        return len(raw.tokenize(text.encode("utf-8"), add_bos=False))

    results: dict[str, list[tuple[float, float, int]]] = {"backend": [], "raw": []}
    for i in range(runs):
        order = ("backend", "raw") if i % 2 == 0 else ("raw", "backend")
        for arm in order:
            messages = [Message("system", f"(run {i}) {SYSTEM}"), Message("user", prompt)]  # same in both arms
            if arm == "backend":
                deltas = backend.stream(messages, max_tokens=max_tokens, temperature=temperature)
            else:
                penalty = backend.bundled.repeat_penalty if backend.bundled else 1.0
                deltas = _raw_deltas(raw, messages, max_tokens, temperature, penalty)
            text, start, first, last = _timed(deltas)
            tokens = count(text)
            tok_s = (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")
            results[arm].append((first - start, tok_s, tokens))

    def summary(rows: list[tuple[float, float, int]]) -> dict[str, float]:
        return {"ttft_s": statistics.median(r[0] for r in rows), "tok_s": statistics.median(r[1] for r in rows),
                "tokens": statistics.median(r[2] for r in rows)}

    b, r = summary(results["backend"]), summary(results["raw"])
    return {
        "model": backend.model, "prompt_tokens": backend.count_tokens(SYSTEM + prompt), "runs": runs,
        "max_tokens": max_tokens, "temperature": temperature, "repack": backend.repack,
        "backend": b, "raw": r, "per_run": results,
        "ratio": {"ttft": b["ttft_s"] / r["ttft_s"], "tok_s": b["tok_s"] / r["tok_s"]},
    }


def prompt_sweep(sizes: Iterable[int], runs: int = 3, settings: LLMSettings | None = None,
                 max_tokens: int = 4) -> list[dict[str, Any]]:
    """Median time to first token of the backend at each prompt size (tokens, system and
    template included), sizes interleaved per run: how large a prompt the 3 s target allows."""
    settings = settings or LLMSettings()
    backend = LlamaCppBackend(settings)
    backend.check()
    sizes = list(sizes)
    prompts = {n: corpus_prompt(n, settings) for n in sizes}
    times: dict[int, list[float]] = {n: [] for n in sizes}
    for i in range(runs):
        for n in sizes[i % len(sizes):] + sizes[: i % len(sizes)]:
            messages = [Message("system", f"(sweep {i}) {SYSTEM}"), Message("user", prompts[n])]
            _, start, first, _ = _timed(backend.stream(messages, max_tokens=max_tokens, temperature=0.0))
            times[n].append(first - start)
    return [{"prompt_tokens": backend.count_tokens(SYSTEM + prompts[n]), "target_tokens": n,
             "ttft_s": statistics.median(times[n]), "runs": times[n]} for n in sizes]


def techniques(model: str, prompt: str, runs: int = 3, *, max_tokens: int = 64,
               draft: int = 2) -> dict[str, Any]:
    """One bundled model at the product's prompt, each speed technique against the plain path.

    Arms (medians over ``runs``, interleaved): ``cold`` a prompt no cache holds (unique first
    line); ``prefix`` the answer prompt right after the answerability check of the same sources
    (what ``rag ask`` does: the KV cache of the shared prefix is reused, only the final
    instruction is evaluated); ``lookup`` cold, with prompt-lookup decoding drafting ``draft``
    tokens from the prompt (answers copy spans of their sources). Greedy, so arms generate the
    same text. Returns TTFT (s) and decode tok/s per arm and the ratios to ``cold``.
    """
    from rag.answer import prompts

    arms: dict[str, list[tuple[float, float]]] = {"cold": [], "prefix": [], "lookup": []}
    plain = LlamaCppBackend(LLMSettings(model=model))
    lookup = LlamaCppBackend(LLMSettings(model=model, prompt_lookup=draft))
    plain.check()
    lookup.check()

    def user(i: int, instruction: str) -> list[Message]:
        return [Message("system", prompts.SYSTEM_PROMPT), Message("user", f"(run {i})\n{prompt}\n\n{instruction}")]

    def measure(backend: LlamaCppBackend, messages: list[Message]) -> tuple[float, float]:
        text, start, first, last = _timed(backend.stream(messages, max_tokens=max_tokens, temperature=0.0))
        tokens = backend.count_tokens(text)
        return first - start, (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")

    for i in range(runs):
        order = ["cold", "prefix", "lookup"] if i % 2 == 0 else ["lookup", "prefix", "cold"]
        for arm in order:
            tag = i * 10 + order.index(arm)
            if arm == "prefix":
                plain.choose(user(tag, prompts.CHECK_INSTRUCTION), ["yes", "no"])  # warms the shared prefix
            backend = lookup if arm == "lookup" else plain
            arms[arm].append(measure(backend, user(tag, prompts.ANSWER_INSTRUCTION)))
    out: dict[str, Any] = {"model": model, "prompt_tokens": plain.count_tokens(prompts.SYSTEM_PROMPT + prompt),
                           "runs": runs, "draft_tokens": draft}
    for arm, rows in arms.items():
        out[arm] = {"ttft_s": statistics.median(r[0] for r in rows), "tok_s": statistics.median(r[1] for r in rows)}
    out["ratio"] = {arm: {"ttft": out[arm]["ttft_s"] / out["cold"]["ttft_s"],
                          "tok_s": out[arm]["tok_s"] / out["cold"]["tok_s"]} for arm in ("prefix", "lookup")}
    return out


def corpus_prompt(target_tokens: int = 600, settings: LLMSettings | None = None) -> str:
    """A RAG-shaped prompt: numbered abstracts from data/papers.jsonl, then a question,
    cut to about ``target_tokens`` by the bundled model's tokenizer."""
    backend = LlamaCppBackend(settings or LLMSettings())
    question = "\n\nQuestion: Which of these papers study model alignment, and how?"
    papers: list[str] = []
    with open(bundled_file(CORPUS), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            paper = json.loads(line)
            papers.append(f"[{n}] {paper['title']}\n{paper['abstract']}")
            if backend.count_tokens("\n\n".join(papers) + question) > target_tokens:
                break
    words = "\n\n".join(papers).split(" ")
    while backend.count_tokens(" ".join(words) + question) > target_tokens:
        words = words[:-5]  # drop the tail of the last abstract
    return " ".join(words) + question


def bench_llm_ttft(runs: int = 3, log: Log = print) -> dict[str, Any]:
    """The bundled LLM's time to first token through our backend vs raw llama-cpp-python."""
    name = "bundled LLM time to first token"
    try:
        budget = Settings().llm.llamacpp_prompt_tokens  # what `rag ask --backend llamacpp` sends at most
        log(f"LLM: {runs} interleaved runs of eval.bench.llm at the {budget}-token prompt budget")
        res = bench_llm(corpus_prompt(budget), runs)
        log("LLM: time to first token by prompt size")
        sweep = prompt_sweep(LLM_SWEEP, runs)
    except Exception as err:  # noqa: BLE001 - llama-cpp or the model missing: a note, not a failure
        return skipped_step(name, f"eval.bench.llm failed: {type(err).__name__}: {err}"[:400])
    ours, baseline = res["backend"]["ttft_s"], res["raw"]["ttft_s"]
    ratio = res.get("ratio", {}).get("ttft", ours / baseline)
    fits = [p for p in sweep if p["ttft_s"] < TTFT_TARGET_S]
    largest = max(fits, key=lambda p: p["prompt_tokens"]) if fits else None
    rows = [table_row(f"{name} ({res.get('prompt_tokens', '?')}-token prompt)", fmt_s(ours),
                      f"{fmt_s(baseline)} raw llama-cpp", ratio, "<= 1.1", verdict(ratio, 1.1)),
            table_row(f"bundled LLM time to first token at the {budget}-token budget", fmt_s(ours),
                      f"{TTFT_TARGET_S:.0f} s target", ours / TTFT_TARGET_S, "<= 1.0",
                      verdict(ours / TTFT_TARGET_S, 1.0)),
            table_row("bundled LLM decode speed", f"{res['backend']['tok_s']:.1f} tok/s",
                      f"{res['raw']['tok_s']:.1f} tok/s raw", res.get("ratio", {}).get("tok_s"), "-", "info"),
            table_row("bundled LLM TTFT by prompt size",
                      ", ".join(f"{p['prompt_tokens']}: {p['ttft_s']:.1f} s" for p in sweep),
                      f"largest under {TTFT_TARGET_S:.0f} s: {largest['prompt_tokens'] if largest else 'none'} tokens",
                      None, "-", "info")]
    per_model = []
    for bundled in [m for m in BUNDLED_MODELS.values() if m.installed()]:
        log(f"LLM: {bundled.name}: cold prompt, shared-prefix reuse and prompt-lookup decoding")
        try:
            t = techniques(bundled.name, corpus_prompt(budget), runs)
        except Exception as err:  # noqa: BLE001
            log(f"LLM: {bundled.name} skipped: {type(err).__name__}: {err}")
            continue
        per_model.append(t)
        cold = t["cold"]
        rows += [
            table_row(f"{bundled.name}: TTFT / decode, cold {t['prompt_tokens']}-token prompt",
                      f"{fmt_s(cold['ttft_s'])} / {cold['tok_s']:.1f} tok/s", "-", None, "-", "info"),
            table_row(f"{bundled.name}: answer after the verdict (KV prefix reused)",
                      f"{fmt_s(t['prefix']['ttft_s'])} TTFT", f"{fmt_s(cold['ttft_s'])} cold",
                      t["ratio"]["prefix"]["ttft"], "-", "info"),
            table_row(f"{bundled.name}: prompt-lookup decoding ({t['draft_tokens']} draft tokens)",
                      f"{t['lookup']['tok_s']:.1f} tok/s", f"{cold['tok_s']:.1f} tok/s plain",
                      t["ratio"]["lookup"]["tok_s"], ">= 1.0 to turn it on",
                      verdict(t["ratio"]["lookup"]["tok_s"], 1.0, higher_is_better=True))]
    return {"result": res, "ours": ours, "baseline": baseline, "ratio": ratio, "budget": budget, "sweep": sweep,
            "largest_prompt_under_target": largest["prompt_tokens"] if largest else None,
            "techniques": per_model, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=600)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: llama.cpp's choice)")
    args = parser.parse_args(argv)
    settings = LLMSettings(threads=args.threads)
    res = bench_llm(corpus_prompt(args.prompt_tokens, settings), runs=args.runs, max_tokens=args.max_tokens,
                    settings=settings)
    print(f"{res['model']}: prompt {res['prompt_tokens']} tokens, {res['runs']} runs interleaved, "
          f"max_tokens {res['max_tokens']}, temperature {res['temperature']}, threads {args.threads}, "
          f"repack {res['repack']}")
    print(f"{'median':<10}{'TTFT (s)':>10}{'tok/s':>10}{'tokens':>8}   per-run TTFT (s)")
    for arm in ("backend", "raw"):
        a = res[arm]
        spread = " ".join(f"{row[0]:.2f}" for row in res["per_run"][arm])
        print(f"{arm:<10}{a['ttft_s']:>10.3f}{a['tok_s']:>10.1f}{a['tokens']:>8.0f}   {spread}")
    print(f"{'ratio':<10}{res['ratio']['ttft']:>10.3f}{res['ratio']['tok_s']:>10.3f}   (backend / raw)")


if __name__ == "__main__":
    main()
