"""Re-check a finished run's answers under the current answer checks, without asking the LLM again.

``rescore_run(src, out, settings)`` reads ``src/results.jsonl`` and writes a new run folder ``out``
(results, summary, report) in which every generated answer went through today's
`rag.answer.answerer.Answerer` finishing steps again (leak scrub, citation parsing, the sentence support
check and re-attribution, naming bare citations, the model's own abstention) and, under
``answer.verify = abstain``, a recorded "no" verdict abstains; so does a "how many X" question
whose prompted abstracts never mention X (`rag.answer.question_kinds.uncounted`). So a change to those steps is
measured on the same generations in seconds, and `rag eval compare SRC OUT` tests it pairwise.

The text replayed is the answer's ``generated`` field (the model's own words), also for an
abstention the checks made of it (so a change can turn one back into an answer); an answer no
model wrote (``generated`` empty: a list from the search) is kept. Runs recorded before the field
existed replay the shown answer with the titles the checks inserted taken out (`untitled`).
What it cannot redo, and keeps as recorded: retrieval, the retrieval gate, the verdict itself,
the generated text (the recorded text already had invalid markers removed: their count is kept),
and timings. A change to anything the model sees (prompt, context, decoding) needs ``rag eval run``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eval.datasets import Dataset, load_dataset, resolve_gold
from eval.results import ResultsWriter, read_results
from eval.run import RunOutcome, manifest, question_record, settings_record
from rag.answer.answer_result import Answer
from rag.answer.answerer import VERDICT_NO, Answerer
from rag.errors import InputError
from rag.search.retrieval import PaperHit
from rag.settings import Settings

GATE_REASONS = ("best passage similarity", "no paper matched")  # abstentions decided before any generation


def untitled(text: str, titles: list[str]) -> str:
    """A recorded answer without the titles the checks wrote into it (runs from before answers
    kept ``generated``, the model's own text): replayed, they would read as the model's words.

    >>> untitled('SetFit (\u201cFew-Shot\u201d) [1] is in \u201cFew-Shot\u201d [1].', ["Few-Shot"])
    'SetFit [1] is in [1].'
    """
    for title in titles:
        text = text.replace(f" (\u201c{title}\u201d) [", " [").replace(f"\u201c{title}\u201d [", "[")
    return text


def recheck(answerer: Answerer, recorded: dict[str, Any]) -> dict[str, Any]:
    """One recorded answer (``Answer.as_dict()``) finished again by the current code."""
    if recorded.get("error") or (recorded.get("abstained") and str(recorded.get("abstain_reason") or "")
                                 .startswith(GATE_REASONS)):
        return recorded
    papers = answerer.retriever.index().papers
    listed = sorted([*recorded["citations"], *recorded["also_retrieved"]], key=lambda c: c["number"])
    numbered = [(c["number"], PaperHit(papers[c["paper_id"]], c["score"], None, None, None, None)) for c in listed]
    answer = Answer(question=recorded["question"], query=recorded["query"], verdict=recorded.get("verdict"),
                    incomplete=recorded.get("incomplete", False))
    prompted = answerer.in_prompt(numbered)
    if unmentioned := answerer.counts_unmentioned(answer.query, prompted):
        answerer.quotes.abstain(answer, unmentioned, numbered)
    elif answer.verdict == "no" and answerer.settings.answer.verify == "abstain":
        answerer.quotes.abstain(answer, VERDICT_NO, numbered)
    elif recorded.get("generated") == "" and not recorded.get("abstained"):
        return recorded  # written by no model (a "which papers" list from the search): nothing to re-check
    elif recorded.get("generated") or not recorded.get("abstained"):
        # an answer, or an abstention the checks made of what the model wrote: both finished again
        text = recorded.get("generated") or untitled(recorded["answer"], [hit.paper.title for _, hit in numbered])
        answerer._finish(answer, text, numbered, prompted=prompted)
    else:  # an abstention recorded without the model's text: the decision stands
        return recorded
    checked = answer.as_dict()
    keys = ("answer", "abstained", "abstain_reason", "citations", "also_retrieved", "sentences", "removed", "withheld")
    return {**recorded, **{k: checked[k] for k in keys},
            "invalid_citations": recorded.get("invalid_citations", 0) + checked["invalid_citations"]}


def rescore_run(src: Path, out: Path, settings: Settings, dataset: Dataset | None = None) -> RunOutcome:
    """Write ``out`` (a run folder) from ``src``'s generations, re-checked under ``settings``
    (``dataset``: the run's questions, by default loaded by the name in its run.json)."""
    from eval.report import summarize, write_report

    src, out = Path(src), Path(out)
    if not (src / "run.json").exists():
        raise InputError(f"{src} is not a run folder (no run.json)", "pass a folder written by `rag eval run`")
    if out.resolve() == src.resolve():
        raise InputError("the output folder is the run being rescored", "pass another --out")
    stored = json.loads((src / "run.json").read_text(encoding="utf-8"))
    answerer = Answerer(settings)
    dataset = resolve_gold(dataset or load_dataset(stored["dataset"]["name"], settings),
                           answerer.retriever.index().papers)
    if dataset.fingerprint != stored["dataset"].get("fingerprint"):
        raise InputError(f"the dataset {dataset.name!r} changed since {src} was run (fingerprint "
                         f"{stored['dataset'].get('fingerprint')} then, {dataset.fingerprint} now)",
                         "rescore a run of the current dataset, or run it again with `rag eval run`")
    record = settings_record(settings)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.jsonl").unlink(missing_ok=True)
    wanted = manifest(dataset, settings, stored.get("judge"))
    (out / "run.json").write_text(json.dumps({**wanted, "rescored_from": str(src)}, indent=2), encoding="utf-8")
    questions = {q.id: q for q in dataset.questions}
    writer = ResultsWriter(out / "results.jsonl")
    computed = 0
    try:
        for rid, r in read_results(src / "results.jsonl").items():
            if r.get("answer") is None or rid not in questions:
                continue
            writer.write([question_record(questions[rid], recheck(answerer, r["answer"]), record, r.get("judge"))])
            computed += 1
    finally:
        writer.close()
    summary = summarize(out, dataset, settings, wanted, computed=computed)
    write_report(out, summary)
    return RunOutcome(out, computed, 0, 0, summary)


__all__ = ["recheck", "rescore_run"]
