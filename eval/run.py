"""Batch runs: ask every question of a dataset, score it, and keep everything in a run folder.

``run_dataset(dataset, out, settings)`` writes to ``out``:

- ``run.json``: what the run is (dataset name and fingerprint, settings, judge), written first;
- ``results.jsonl``: one line per question, appended and flushed as each finishes: the full
  ``Answer.as_dict()``, its per-question metrics, the settings;
- ``summary.json`` and ``report.md`` with plots (``eval.report``), rewritten at the end.

A run is resumable: a rerun into the same folder skips the question ids already in
``results.jsonl`` (a question whose ask raised is retried) and refuses, naming the
difference, when the settings, dataset or judge differ from ``run.json``. A conversation
is one unit of work (its turns are asked in order in one ``rag.chat.Conversation`` and
written together), so an interruption never leaves half a conversation behind.

Left out: the command line (``rag.cli``), metric definitions (``eval.metrics``), plots.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eval.datasets import Dataset, Item, Question
from eval.metrics import score_question
from eval.results import ResultsWriter, git_commit, read_results
from rag.errors import EmptyIndexError, InputError, RagError
from rag.settings import load_settings

REDACTED = "***"


class RunMismatchError(InputError):
    """The run folder holds a run made with other settings."""


# ------------------------------------------------------------------ settings


def settings_record(settings: Any) -> dict[str, Any]:
    """The settings as JSON, secrets redacted and the web app's group dropped (it does not shape answers)."""
    data = settings.model_dump(mode="json", exclude={"ui"})
    if data["llm"].get("openai_api_key") not in (None, "not-needed"):
        data["llm"]["openai_api_key"] = REDACTED
    return data


def diff_records(stored: Any, now: Any, prefix: str = "",
                 labels: tuple[str, str] = ("in the run folder", "now")) -> list[str]:
    """Dotted paths that differ, with both values.

    >>> diff_records({"answer": {"k": 1, "t": 0.2}}, {"answer": {"k": 1, "t": 0.3}})
    ['answer.t: 0.2 in the run folder, 0.3 now']
    """
    if isinstance(stored, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(stored) | set(now)):
            out += diff_records(stored.get(key), now.get(key), f"{prefix}{key}.", labels)
        return out
    return [] if stored == now else [f"{prefix.rstrip('.')}: {stored!r} {labels[0]}, {now!r} {labels[1]}"]


# ------------------------------------------------------------------ asking


def ask_item(answerer: Any, item: Item) -> list[dict[str, Any]]:
    """Answers for an item's questions: a conversation's turns in one ``Conversation``."""
    if len(item.questions) == 1 and item.questions[0].turn == 0:
        return [answerer.ask(item.questions[0].question).as_dict()]
    from rag.chat import Conversation

    conversation = Conversation(answerer)
    return [conversation.ask(q.question).as_dict() for q in item.questions]


def question_record(q: Question, answer: dict[str, Any] | None, settings: dict[str, Any],
                    judged: dict[str, Any] | None = None, error: str | None = None) -> dict[str, Any]:
    metrics = score_question(q, answer) if answer is not None else None
    if metrics is not None and judged:
        metrics |= {k: v for k, v in judged.items() if k in ("faithfulness", "relevancy")}
    return {"id": q.id, "item": q.item, "turn": q.turn, "type": q.type, "lang": q.lang, "question": q.question,
            "gold": q.gold, "answers": q.answers, "error": error, "metrics": metrics, "judge": judged,
            "answer": answer, "settings": settings, "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}


@dataclass
class RunOutcome:
    out: Path
    computed: int           # questions asked by this call
    skipped: int            # questions already in results.jsonl
    errors: int             # questions whose ask raised (retried by a rerun)
    summary: dict[str, Any]


def manifest(dataset: Dataset, settings: Any, judge: str | None) -> dict[str, Any]:
    return {"dataset": {"name": dataset.name, "source": dataset.source, "fingerprint": dataset.fingerprint,
                        "items": len(dataset.items), "questions": len(dataset.questions)},
            "settings": settings_record(settings), "judge": judge}


def _comparable(m: dict[str, Any]) -> dict[str, Any]:
    d = m.get("dataset") or {}
    # the fingerprint, not the name: `dev` and `data/eval/dev.jsonl` are one dataset
    return {"dataset": {k: d.get(k) for k in ("source", "fingerprint")},
            "settings": m.get("settings"), "judge": m.get("judge")}


def check_resumable(out: Path, wanted: dict[str, Any]) -> None:
    """Refuse to mix runs: the stored run.json must match in dataset, settings and judge
    (without run.json, the settings of the first stored result must match)."""
    path = out / "run.json"
    if path.exists():
        diffs = diff_records(_comparable(json.loads(path.read_text(encoding="utf-8"))), _comparable(wanted))
    else:
        first = next(iter(read_results(out / "results.jsonl").values()), None)
        diffs = diff_records({"settings": first.get("settings")}, {"settings": wanted["settings"]}) if first else []
    if diffs:
        raise RunMismatchError(
            f"{out} holds a run made differently: " + "; ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else ""),
            "use another --out, or the same settings to resume")


def run_dataset(dataset: Dataset, out: Path, settings: Any, *, workers: int = 1, limit: int | None = None,
                judge: Any | None = None, judge_spec: str | None = None, judge_note: str | None = None,
                answerer: Any | None = None, progress: Callable[[int, int], None] | None = None) -> RunOutcome:
    """Ask the dataset's first ``limit`` items (all when None) that ``out`` has not finished; then
    rewrite summary.json and report.md from every finished question."""
    from eval.judge import NO_JUDGE
    from rag.answer.answerer import Answerer

    out = Path(out)
    judge_note = judge_note or (None if judge else NO_JUDGE)
    wanted = manifest(dataset, settings, judge_spec)
    check_resumable(out, wanted)
    if answerer is None:
        answerer = Answerer(settings)
    index = answerer.retriever.index()  # raises EmptyIndexError before anything is written
    if not index.papers:
        raise EmptyIndexError(f"the index at {settings.home} holds no papers")
    answerer.backend_for()  # an explicit backend that is down fails here, not on every question
    answerer.retriever.search("warm-up query", k=1)  # first-call costs (model, Chroma) stay out of the latencies

    out.mkdir(parents=True, exist_ok=True)
    if not (out / "run.json").exists():
        created = datetime.now(UTC).isoformat(timespec="seconds")
        (out / "run.json").write_text(json.dumps({**wanted, "created": created, "git": git_commit()}, indent=2),
                                      encoding="utf-8")
    done = {rid for rid, r in read_results(out / "results.jsonl").items() if r.get("error") is None}
    items = dataset.items[:limit] if limit else dataset.items
    todo = [it for it in items if not all(q.id in done for q in it.questions)]
    total = sum(len(it.questions) for it in items)
    skipped = total - sum(len(it.questions) for it in todo)
    record = settings_record(settings)
    writer = ResultsWriter(out / "results.jsonl")
    computed = errors = 0
    finished = skipped
    started = time.perf_counter()

    def work(item: Item) -> list[dict[str, Any]]:
        try:
            answers = ask_item(answerer, item)
        except RagError as err:
            return [question_record(q, None, record, error=err.user_message()) for q in item.questions]
        except Exception as err:  # noqa: BLE001 - one broken question must not end a long run
            return [question_record(q, None, record, error=f"{type(err).__name__}: {err}") for q in item.questions]
        judged = [judge.score(q.question, a) if judge else None for q, a in zip(item.questions, answers)]
        return [question_record(q, a, record, j) for q, a, j in zip(item.questions, answers, judged)]

    if progress:
        progress(finished, total)

    def finish(lines: list[dict[str, Any]]) -> None:
        nonlocal computed, errors, finished
        writer.write(lines)
        computed += len(lines)
        errors += sum(r["error"] is not None for r in lines)
        finished += len(lines)
        if progress:
            progress(finished, total)

    try:
        if workers <= 1:
            for item in todo:
                finish(work(item))
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval") as pool:
                pending: set[Future[list[dict[str, Any]]]] = {pool.submit(work, it) for it in todo}
                try:
                    while pending:
                        ready, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in ready:
                            finish(future.result())
                except BaseException:
                    for future in pending:
                        future.cancel()
                    raise
    finally:
        writer.close()

    from eval.report import summarize, write_report

    summary = summarize(out, dataset, settings, wanted, judge_note=judge_note, workers=workers,
                        wall_s=time.perf_counter() - started, computed=computed)
    write_report(out, summary)
    return RunOutcome(out, computed, skipped, errors, summary)


def default_out(dataset_name: str, settings: Any) -> Path:
    """``runs/<dataset>-<backend>``: a stable default, so rerunning the same command resumes."""
    stem = Path(dataset_name).stem if dataset_name.endswith((".jsonl", ".json", ".ndjson")) else dataset_name
    return Path("runs") / f"{stem}-{settings.llm.backend}"


def evaluate(dataset_name: str, *, backend: str | None = None, config: Path | None = None, out: Path | None = None,
             workers: int = 1, limit: int | None = None, judge: str | None = None,
             progress: Callable[[int, int], None] | None = None) -> RunOutcome:
    """What ``rag eval run`` does: settings, dataset, judge, then `run_dataset`."""
    from eval.datasets import load_dataset, resolve_gold
    from eval.judge import make_judge
    from rag.search.retrieval import Retriever

    settings = load_settings(config, backend)
    dataset = load_dataset(dataset_name, settings)
    # gold given as titles, arXiv ids or DOIs -> paper ids; an unknown one stops here, before anything runs
    dataset = resolve_gold(dataset, Retriever(settings).index().papers)
    judge_obj, note = make_judge(judge, settings)
    return run_dataset(dataset, out or default_out(dataset_name, settings), settings, workers=workers, limit=limit,
                       judge=judge_obj, judge_spec=judge, judge_note=note, progress=progress)


__all__ = ["evaluate", "default_out", "RunMismatchError", "RunOutcome", "settings_record", "diff_records",
           "run_dataset", "ask_item", "check_resumable"]
