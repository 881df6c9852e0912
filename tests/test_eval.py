"""Batch evaluation: metrics against hand computations (and ranx), datasets, a small run end to
end with the extractive backend, resume, settings mismatch, compare, calibrate, the judge
(unreachable and against the Ollama stand-in) and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eval import metrics
from eval.compare import load_run, mcnemar_exact, permutation_test, write_comparison
from eval.datasets import Question, load_dataset, read_jsonl, title_abstract
from eval.results import ResultsWriter, read_results
from eval.run import RunMismatchError, run_dataset
from rag.answer.answerer import Answerer
from rag.errors import InputError
from rag.settings import Settings, load_settings

from .conftest import free_port, run_cli
from .ollama_standin import OllamaStandIn

# 6 records: 3 answerable, 2 unanswerable, 1 two-turn conversation -> 7 scored questions
SMALL = [
    {"id": "q004", "type": "factoid", "question": "What is the name of the 7B model described in the Nyonic "
     "technical report?", "gold": ["title:707d1597fdca15a7"], "answers": ["Wonton"], "lang": "en"},
    {"id": "q005", "type": "factoid", "question": "What benchmark was introduced to evaluate knowledge editing "
     "methods for LLMs?", "gold": ["title:e7b964d9b4106f77"], "answers": ["KnowEdit"], "lang": "en"},
    {"id": "q006", "type": "factoid", "question": "How many parameters does Skywork-MoE have?",
     "gold": ["title:7a92a17d60b241af"], "answers": ["146 billion", "146"], "lang": "en"},
    {"id": "u01", "type": "unanswerable-far", "question": "How long should sourdough bread dough proof overnight "
     "in the fridge?", "gold": [], "answers": [], "lang": "en"},
    {"id": "u02", "type": "unanswerable-far", "question": "Who won the 1998 FIFA World Cup final in Paris?",
     "gold": [], "answers": [], "lang": "en"},
    {"id": "c01", "type": "conversation", "lang": "en", "turns": [
        {"question": "Which paper introduces the REFUEL algorithm for multi-turn RLHF?",
         "gold": ["title:e7644c60abdc1b94"], "answers": ["Regressing the Relative Future"]},
        {"question": "Which model did they use to simulate the user in their experiments?",
         "gold": ["title:e7644c60abdc1b94"], "answers": ["Llama-3.1-70B"]}]},
]
PNG = b"\x89PNG\r\n\x1a\n"


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ------------------------------------------------------------------ metrics by hand


@pytest.mark.heavy
def test_retrieval_scores_match_a_hand_computation() -> None:
    # gold b and d at ranks 2 and 4 of 4
    got = metrics.retrieval_scores(["b", "d"], ["a", "b", "c", "d"])
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert got["recall@1"] == 0.0
    assert got["recall@5"] == got["recall@10"] == 1.0
    assert got["mrr@10"] == pytest.approx(0.5)
    assert got["ndcg@10"] == pytest.approx(dcg / idcg, abs=1e-6)
    assert metrics.retrieval_scores(["x"], [])["recall@10"] == 0.0  # empty list: zero, not an error


def test_retrieval_scores_agree_with_the_title_task_scorer() -> None:
    from eval.retrieval import score

    runs = {"m": {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"z": 2.0, "y": 1.0}}}
    qrels = {"q1": {"c": 1}, "q2": {"y": 1, "x": 1}}
    batch = score(qrels, runs)["m"]
    one = [metrics.retrieval_scores(list(qrels[q]), list(runs["m"][q])) for q in qrels]
    for m in metrics.RETRIEVAL:
        assert batch[m] == pytest.approx(np.mean([o[m] for o in one]), abs=1e-4)


@pytest.mark.heavy
def test_retrieval_scores_survive_concurrent_workers() -> None:
    """ranx's numba kernels abort the process when two threads call them at once (`--workers 2`);
    run in a subprocess so a regression fails this test instead of killing the session."""
    import subprocess
    import sys

    code = ("from concurrent.futures import ThreadPoolExecutor\n"
            "from eval.metrics import retrieval_scores\n"
            "with ThreadPoolExecutor(4) as pool:\n"
            "    assert len(list(pool.map(lambda i: retrieval_scores(['a'], ['b', 'a']), range(300)))) == 300\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr[-2000:]


def test_naming_the_cited_paper_is_not_an_invented_specific() -> None:
    """dev c09.t1: the checker's named sentence quotes the cited paper's title; an invented value still counts."""
    q = Question("c09.t1", "Which paper proposes SetFit?", ["a"], [])
    named = {"text": "The paper proposes SetFit (“Efficient Few-Shot Learning Without Prompts”) [1].",
             "supported": True, "claim": False}
    invented = {"text": "SetFit reaches 92.4 F1 on SST-5 [1].", "supported": False}
    shown = {"answer": named["text"], "abstained": False, "sentences": [named],
             "citations": [{"paper_id": "a", "title": "Efficient Few-Shot Learning Without Prompts"}]}
    assert metrics.score_question(q, shown)["shown_unsupported_specifics"] == 0
    assert metrics.score_question(q, {**shown, "sentences": [named, invented]})["shown_unsupported_specifics"] == 1
    untitled = {**shown, "citations": [{"paper_id": "a"}]}
    assert metrics.score_question(q, untitled)["shown_unsupported_specifics"] == 1  # the old count


def test_answer_match_is_a_case_insensitive_substring_of_any_answer() -> None:
    assert metrics.answer_match("It is called WONTON-7B.", ["wonton"]) is True
    assert metrics.answer_match("146 billion parameters", ["200", "146 Billion"]) is True
    assert metrics.answer_match("nothing", ["KnowEdit"]) is False
    assert metrics.answer_match("anything", []) is None


def answer(text: str = "", cited: list[str] = (), retrieved: list[str] = (), abstained: bool = False,
           supported: list[bool] = (), invalid: int = 0) -> dict[str, Any]:
    return {"answer": text, "abstained": abstained, "invalid_citations": invalid,
            "citations": [{"paper_id": p} for p in cited], "retrieved": [{"paper_id": p} for p in retrieved],
            "sentences": [{"text": "s", "supported": s} for s in supported],
            "timings": {"retrieval_s": 0.1, "ttft_s": 0.5, "total_s": 1.0}}


def test_score_question_citations_unsupported_and_correctness() -> None:
    q = Question("q", "?", ["a", "b"], ["Wonton"])
    m = metrics.score_question(q, answer("Wonton [1] and more [2]", ["a", "c"], ["c", "a", "b"],
                                         supported=[True, False, False], invalid=1))
    assert m["citation_precision"] == 0.5 and m["citation_recall"] == 0.5
    assert m["unsupported_rate"] == pytest.approx(2 / 3)
    assert m["invalid_citations"] == 1 and m["answer_match"] is True and m["correct"] is True
    assert m["mrr@10"] == pytest.approx(0.5) and m["recall@1"] == 0.0

    no_strings = Question("q", "?", ["a"], [])
    assert metrics.score_question(no_strings, answer("x", ["a"], ["a"]))["correct"] is True   # cites gold
    assert metrics.score_question(no_strings, answer("x", ["z"], ["a"]))["correct"] is False
    abstained = metrics.score_question(q, answer("no", [], ["a"], abstained=True))
    assert abstained["correct"] is False and abstained["citation_recall"] is None
    unanswerable = Question("u", "?", [], [])
    assert metrics.score_question(unanswerable, answer("no", abstained=True))["correct"] is True
    assert metrics.score_question(unanswerable, answer("made up", ["a"]))["correct"] is False
    assert metrics.score_question(unanswerable, answer("x"))["recall@5"] is None
    unknown = metrics.score_question(Question("f", "?", None), answer("x", ["a"]))
    assert unknown["correct"] is None and unknown["citation_precision"] is None


def row(answerable: bool | None, abstained: bool, correct: bool | None, total: float = 1.0, **kw: Any) -> dict:
    return {"answerable": answerable, "abstained": abstained, "correct": correct, "total_s": total, **kw}


def test_aggregate_abstention_precision_accuracy_by_hand() -> None:
    rows = [
        row(True, False, True, 1.0, citation_recall=1.0),    # answered right
        row(True, False, False, 2.0, citation_recall=0.0),   # answered wrong
        row(True, True, False, 3.0),                         # false abstention
        row(True, False, True, 4.0, citation_recall=0.5),    # answered right
        row(False, True, True, 5.0),                         # correct abstention
        row(False, False, False, 6.0),                       # answered an unanswerable one
        row(None, False, None, 7.0),                         # unknown gold (thumbs-down feedback)
    ]
    agg = metrics.aggregate(rows)
    v = {k: a["value"] for k, a in agg.items()}
    assert v["abstention_precision"] == pytest.approx(1 / 2)          # 1 of 2 abstentions was right
    assert v["abstention_recall"] == pytest.approx(1 / 2)             # 1 of 2 unanswerable abstained
    assert v["abstention_f1"] == pytest.approx(0.5)
    assert v["false_abstention_rate"] == pytest.approx(1 / 4)
    assert v["precision"] == pytest.approx(2 / 4)                     # 2 right of 4 known-gold answers
    assert v["accuracy"] == pytest.approx(3 / 6)                      # 2 answers + 1 abstention of 6 known
    assert v["citation_recall"] == pytest.approx(0.5) and agg["citation_recall"]["n"] == 3
    assert v["total_s.median"] == pytest.approx(4.0)
    assert v["total_s.p95"] == pytest.approx(np.percentile([1, 2, 3, 4, 5, 6, 7], 95), abs=1e-3)
    for a in agg.values():
        assert a["ci"][0] <= a["value"] + 1e-9 and a["value"] <= a["ci"][1] + 1e-9
    assert metrics.aggregate(rows) == agg  # fixed seed: reproducible


def test_abstention_sweep_and_recommendation() -> None:
    dense = [0.10, 0.15, 0.30, 0.40, 0.18]
    cover = [0.10, 0.20, 0.50, 0.60, 0.10]
    unans = [True, True, False, False, False]
    sweep = metrics.abstention_sweep(dense, cover, [True] * 5, unans, [0.12, 0.16, 0.2], [0.3])
    by_t = {r["abstain_threshold"]: r for r in sweep}
    assert by_t[0.12]["recall"] == 0.5 and by_t[0.12]["precision"] == 1.0
    assert by_t[0.16]["f1"] == 1.0 and by_t[0.16]["false_abstention_rate"] == 0.0
    assert by_t[0.2]["false_abstention_rate"] == pytest.approx(1 / 3, abs=1e-4)  # the 0.18 answerable one
    assert metrics.recommend(sweep, 0.05)["abstain_threshold"] == 0.16


def test_paired_tests_by_hand() -> None:
    a, b = np.array([1, 1, 1, 1, 1, 0, 1]), np.array([0, 0, 0, 0, 0, 0, 1])
    assert mcnemar_exact(a, b) == pytest.approx(2 * 0.5 ** 5)   # 5 discordant pairs, all one way
    assert mcnemar_exact(a, a) == 1.0
    assert permutation_test(np.ones(10)) == pytest.approx(2 / 1024, abs=0.002)  # exact: 2 of 2^10 sign sets
    assert permutation_test(np.zeros(5)) == 1.0


# ------------------------------------------------------------------ datasets and settings


def test_dev_dataset_and_conversation_turns() -> None:
    dev = load_dataset("dev")
    assert len(dev.items) == 86 and len(dev.questions) == 96
    c01 = next(i for i in dev.items if i.id == "c01")
    assert [q.id for q in c01.questions] == ["c01.t1", "c01.t2"] and c01.questions[1].turn == 2


def test_feedback_export_is_a_dataset(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "feedback.jsonl", [
        {"question": "Which model is 7B?", "answer": "Wonton [1]", "rating": "up",
         "citations": [{"number": 1, "paper_id": "title:707d1597fdca15a7", "title": "Nyonic"}]},
        {"question": "Is it good?", "answer": "Yes [1]", "rating": "down", "citations": [{"paper_id": "p"}]},
        {"question": "Bread?", "answer": "The provided papers do not answer this question.", "rating": "up",
         "citations": [], "abstained": True},
        {"question": "Toast?", "answer": "The abstracts do not mention toast.", "rating": "up", "citations": [],
         "abstained": False},
    ])
    data = read_jsonl(path)
    assert data.source == "feedback"
    up, down, abstention, uncited = data.questions
    assert up.gold == ["title:707d1597fdca15a7"] and up.type == "feedback-up"
    assert down.gold is None and down.type == "feedback-down" and down.question == "Is it good?"
    assert abstention.gold == [] and abstention.answerable is False
    assert uncited.gold is None  # neither cited papers nor an abstention: nothing known


def test_bad_dataset_lines_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"bad.jsonl:2: id 'a' appears twice"):
        read_jsonl(write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "question": "x"}, {"id": "a", "question": "y"}]))
    with pytest.raises(InputError, match="no `question`"):
        read_jsonl(write_jsonl(tmp_path / "bad2.jsonl", [{"id": "a", "gold": []}]))


def test_title_abstract_dataset_from_the_index(bundled_home: Path) -> None:
    data = title_abstract(Settings(home=bundled_home))
    assert len(data.items) == 184
    q = data.questions[0]
    assert q.gold and q.type == "title" and not q.answers


def test_config_file_overrides_and_unknown_keys(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[answer]\nabstain_threshold = 0.3\n[retrieval]\nk = 7\n")
    s = load_settings(toml, backend="extractive")
    assert s.answer.abstain_threshold == 0.3 and s.retrieval.k == 7 and s.llm.backend == "extractive"
    assert s.answer.abstain_coverage == Settings().answer.abstain_coverage  # untouched fields keep defaults
    (tmp_path / "bad.json").write_text(json.dumps({"answer": {"abstain_treshold": 0.3}}))
    with pytest.raises(InputError, match=r"setting 'answer.abstain_treshold' \(did you mean 'answer.abstain_thr"):
        load_settings(tmp_path / "bad.json")


def test_torn_result_line_is_ignored_and_closed(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": "a", "error": null}\n{"id": "b", "err')
    assert list(read_results(path)) == ["a"]
    writer = ResultsWriter(path)
    writer.write([{"id": "c", "error": None}])
    writer.close()
    assert list(read_results(path)) == ["a", "c"]


# ------------------------------------------------------------------ runs end to end


class CountingAnswerer(Answerer):
    """The real answerer, counting the questions it is asked (conversation turns included)."""

    asked = 0

    def stream(self, question: str, **kwargs: Any):  # type: ignore[no-untyped-def]
        CountingAnswerer.asked += 1
        yield from super().stream(question, **kwargs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, bundled_home: Path, embedder) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Run A (interrupted after 3 records, then resumed) and run B (never abstains on similarity)."""
    root = tmp_path_factory.mktemp("runs")
    dataset = read_jsonl(write_jsonl(root / "small.jsonl", SMALL), "small")
    settings_a = Settings(home=bundled_home, llm={"backend": "extractive"})
    answerer = CountingAnswerer(settings_a, embedder=embedder)
    CountingAnswerer.asked = 0
    first = run_dataset(dataset, root / "A", settings_a, limit=3, answerer=answerer)
    asked_first = CountingAnswerer.asked
    lines_first = len((root / "A" / "results.jsonl").read_text().splitlines())
    second = run_dataset(dataset, root / "A", settings_a, answerer=answerer)
    asked_second = CountingAnswerer.asked - asked_first
    settings_b = Settings(home=bundled_home, llm={"backend": "extractive"},
                          answer={"abstain_threshold": 0.0, "abstain_coverage": 0.0})
    b = run_dataset(dataset, root / "B", settings_b, workers=2, answerer=Answerer(settings_b, embedder=embedder))
    return {"root": root, "dataset": dataset, "settings_a": settings_a, "answerer": answerer, "first": first,
            "second": second, "b": b, "asked_first": asked_first, "asked_second": asked_second,
            "lines_first": lines_first}


def test_run_end_to_end_writes_every_output(runs: dict[str, Any]) -> None:
    a = runs["root"] / "A"
    for name in ("run.json", "results.jsonl", "summary.json", "report.md", "metrics_by_type.png", "latency.png",
                 "abstention.png"):
        assert (a / name).is_file() and (a / name).stat().st_size > 0, name
    lines = [json.loads(x) for x in (a / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == ["c01.t1", "c01.t2", "q004", "q005", "q006", "u01", "u02"]
    r = next(x for x in lines if x["id"] == "q006")
    assert r["answer"]["citations"][0]["paper_id"] == "title:7a92a17d60b241af"  # the full Answer.as_dict()
    assert r["settings"]["llm"]["backend"] == "extractive" and r["metrics"]["recall@5"] == 1.0
    summary = json.loads((a / "summary.json").read_text())
    assert summary["counts"]["finished"] == 7 and summary["counts"]["unanswerable"] == 2
    assert summary["models"] == {"extractive / sentence selection": 7}
    for key in ("recall@5", "mrr@10", "citation_precision", "citation_recall", "abstention_precision",
                "abstention_recall", "false_abstention_rate", "precision", "accuracy", "total_s.median", "ttft_s.p95"):
        assert key in summary["metrics"], key
        assert len(summary["metrics"][key]["ci"]) == 2
    assert summary["metrics"]["abstention_recall"]["value"] == 1.0  # bread and football: far off-topic
    assert set(summary["by_type"]) == {"factoid", "unanswerable-far", "conversation"}
    assert summary["judge"]["note"].startswith("skipped: no judge configured")
    report = (a / "report.md").read_text()
    assert "![metrics by question type](metrics_by_type.png)" in report and "| abstention recall |" in report


def test_report_plots_are_non_empty_pngs(runs: dict[str, Any]) -> None:
    for name in ("metrics_by_type.png", "latency.png", "abstention.png"):
        data = (runs["root"] / "A" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name


def test_resume_computes_only_the_remaining_questions(runs: dict[str, Any]) -> None:
    assert runs["asked_first"] == 3 and runs["lines_first"] == 3
    assert runs["first"].computed == 3
    assert runs["second"].skipped == 3 and runs["second"].computed == 4  # 2 unanswerable + 2 conversation turns
    assert runs["asked_second"] == 4
    assert len((runs["root"] / "A" / "results.jsonl").read_text().splitlines()) == 7  # nothing asked twice


def test_rerun_with_other_settings_is_refused_naming_the_difference(runs: dict[str, Any]) -> None:
    changed = runs["settings_a"].model_copy(update={"answer": runs["settings_a"].answer.model_copy(
        update={"abstain_threshold": 0.3})})
    with pytest.raises(RunMismatchError, match=r"answer\.abstain_threshold: 0\.22 in the run folder, 0\.3 now"):
        run_dataset(runs["dataset"], runs["root"] / "A", changed, answerer=runs["answerer"])
    again = run_dataset(runs["dataset"], runs["root"] / "A", runs["settings_a"], answerer=runs["answerer"])
    assert again.computed == 0 and again.skipped == 7


def test_rescore_under_the_same_settings_changes_nothing_and_a_stricter_check_keeps_no_claim(
        runs: dict[str, Any], tmp_path: Path) -> None:
    from eval.rescore import rescore_run

    def lines(folder: Path) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in map(json.loads, (folder / "results.jsonl").read_text().splitlines())}

    a = runs["root"] / "A"
    same = rescore_run(a, tmp_path / "same", runs["settings_a"], runs["dataset"])
    assert same.computed == 7 and (tmp_path / "same" / "report.md").is_file()
    before, after = lines(a), lines(tmp_path / "same")
    for rid, r in before.items():
        assert after[rid]["answer"]["answer"] == r["answer"]["answer"], rid
        assert after[rid]["metrics"]["correct"] == r["metrics"]["correct"], rid
    strict = runs["settings_a"].model_copy(update={"answer": runs["settings_a"].answer.model_copy(
        update={"support_threshold": 1.01})})
    rescore_run(a, tmp_path / "strict", strict, runs["dataset"])
    strict_lines = lines(tmp_path / "strict").values()
    # no claim passes a check no evidence can meet: each answer's claims are withheld or it abstains
    assert not [s for r in strict_lines for s in r["answer"]["sentences"] if s["supported"] and s.get("claim", True)]
    assert sum(r["answer"]["abstained"] for r in strict_lines) > sum(r["answer"]["abstained"] for r in before.values())
    with pytest.raises(InputError, match="not a run folder"):
        rescore_run(tmp_path, tmp_path / "x", runs["settings_a"], runs["dataset"])


def test_rescore_reopens_an_abstention_the_checks_made_and_keeps_a_list_no_model_wrote(runs: dict[str, Any]) -> None:
    from eval.rescore import recheck

    recorded = next(r["answer"] for r in map(json.loads, (runs["root"] / "A" / "results.jsonl").read_text()
                                                            .splitlines()) if r["id"] == "q006")
    paper = recorded["citations"][0]
    withheld = {**recorded, "generated": recorded["answer"], "abstained": True,
                "answer": "The provided papers do not answer this question.",
                "abstain_reason": "no retrieved abstract states what the answer claimed"}
    reopened = recheck(runs["answerer"], withheld)  # a check that now passes it answers again
    assert not reopened["abstained"] and reopened["citations"][0]["paper_id"] == paper["paper_id"]
    listed = {**recorded, "generated": "", "answer": f"- {paper['title']} [{paper['number']}]: \u201cquoted\u201d"}
    assert recheck(runs["answerer"], listed) is listed  # a list from the search is nobody's claim to re-check


def test_context_sweep_keeps_less_at_a_smaller_budget(runs: dict[str, Any]) -> None:
    from eval.context import Tokenizer, context_sweep

    result = context_sweep(runs["dataset"], runs["settings_a"], [120, 2000], Tokenizer("approximate"))
    small, large = result["budgets"]
    assert small["questions"] == large["questions"] == 4  # the answerable first turns
    assert small["tokens_median"] < large["tokens_median"] <= 2000
    assert large["gold_in_prompt"] == 1.0 and small["gold_in_prompt"] <= large["gold_in_prompt"]
    assert small["answer_in_prompt"] < large["answer_in_prompt"] == 1.0


def test_compare_two_runs(runs: dict[str, Any], tmp_path: Path) -> None:
    result, plot = write_comparison(runs["root"] / "A", runs["root"] / "B")
    assert plot == runs["root"] / "B" / "compare.png" and plot.read_bytes().startswith(PNG)
    assert result["shared"] == 7
    by = {r["metric"]: r for r in result["metrics"]}
    # B never abstains: both far-off questions are answered, A abstained on both
    assert by["abstained_unanswerable"]["a"] == 1.0 and by["abstained_unanswerable"]["b"] == 0.0
    assert by["abstained_unanswerable"]["test"] == "McNemar exact"
    assert by["abstained_unanswerable"]["p"] == pytest.approx(0.5)  # 2 discordant pairs: 2 * 0.5^2
    assert by["total_s"]["test"] == "paired permutation" and 0 < by["total_s"]["p"] <= 1
    assert any("abstain_threshold" in line for line in result["settings_diff"])
    _, other = write_comparison(runs["root"] / "A", runs["root"] / "B", tmp_path / "cmp.png")
    assert other.is_file() and (tmp_path / "cmp.json").is_file()


def test_compare_lists_the_flipped_questions_and_its_table_fits_80_columns(runs: dict[str, Any]) -> None:
    import io

    from rich.console import Console

    from eval.compare import comparison_table, flipped_lines

    result, plot = write_comparison(runs["root"] / "A", runs["root"] / "B")
    flipped = {f["id"]: f for f in result["flipped"]}
    far = [q for q, r in load_run(runs["root"] / "A").items() if r["metrics"]["answerable"] is False]
    assert len(far) == 2 and all("abstained_unanswerable" in flipped[q]["worse"] for q in far)  # B stopped abstaining
    assert json.loads(plot.with_suffix(".json").read_text())["flipped"] == result["flipped"]
    lines = flipped_lines(result)
    assert lines[0].startswith(f"{len(flipped)} questions flipped") and any(far[0] in line for line in lines)

    screen = io.StringIO()
    Console(file=screen, width=80, color_system=None).print(comparison_table(result))
    rows = screen.getvalue().splitlines()
    assert max(len(row) for row in rows) <= 80
    for r in result["metrics"]:  # every number on one line, none cut or wrapped
        assert any(f"{r['ci'][0]:+.3f}..{r['ci'][1]:+.3f}" in row and f"{r['delta']:+.3f}" in row for row in rows), r
    cli = run_cli("eval", "compare", str(runs["root"] / "A"), str(runs["root"] / "B"), env={"COLUMNS": "80"})
    assert cli.returncode == 0 and "questions flipped" in cli.stdout, cli.stderr


def test_calibrate_on_retrieval_confidences(runs: dict[str, Any]) -> None:
    from eval.calibrate import calibrate, collect

    points = collect(runs["dataset"], runs["settings_a"], retriever=runs["answerer"].retriever)
    assert len(points) == 7 and sum(p["unanswerable"] for p in points) == 2
    result = calibrate(points, runs["settings_a"])
    best = result["recommended"]
    assert best is not None and best["false_abstention_rate"] <= 0.05 and best["f1"] == 1.0
    assert result["current"]["abstain_threshold"] == 0.22


# ------------------------------------------------------------------ the judge


def test_unreachable_judge_is_skipped_with_a_note(runs: dict[str, Any], tmp_path: Path) -> None:
    from eval.judge import make_judge

    judge, note = make_judge(f"ollama:llama3.2@http://127.0.0.1:{free_port()}", runs["settings_a"])
    assert judge is None and note.startswith("skipped: judge ollama:llama3.2@") and "unreachable" in note
    outcome = run_dataset(runs["dataset"], tmp_path / "judged", runs["settings_a"], limit=1,
                          answerer=runs["answerer"], judge_spec="ollama:llama3.2", judge_note=note)
    assert outcome.summary["judge"]["note"] == note
    assert json.loads((tmp_path / "judged" / "summary.json").read_text())["judge"]["note"] == note
    assert note in (tmp_path / "judged" / "report.md").read_text()


def test_judge_scores_through_llama_index_against_the_ollama_standin(runs: dict[str, Any]) -> None:
    from eval.judge import make_judge

    with OllamaStandIn(reply="YES", models=["llama3.2:latest"]) as server:
        judge, note = make_judge(f"ollama:llama3.2@{server.url}", runs["settings_a"])
        assert note is None and judge is not None
        result = next(r for r in read_results(runs["root"] / "A" / "results.jsonl").values() if r["id"] == "q006")
        scores = judge.score(result["question"], result["answer"])
        assert scores == {"faithfulness": 1.0, "relevancy": 1.0}
        assert judge.score("q", {"abstained": True}) == {"faithfulness": None, "relevancy": None}
        assert server.chat_requests()  # the evaluators did talk to the server


# ------------------------------------------------------------------ CLI


def test_cli_run_with_limit(bundled_copy: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "small.jsonl", SMALL)
    result = run_cli("eval", "run", str(data), "--backend", "extractive", "--out", str(tmp_path / "cli"),
                     "--limit", "2")
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "cli" / "results.jsonl").read_text().splitlines()) == 2
    assert "recall@5" in result.stdout and "2 questions computed" in result.stderr
    assert (tmp_path / "cli" / "report.md").is_file()


def test_cli_run_on_an_empty_index_says_to_ingest(tmp_path: Path) -> None:
    result = run_cli("eval", "run", "dev", "--backend", "extractive", "--out", str(tmp_path / "none"))
    assert result.returncode == 2
    assert "`rag ingest --bundled`" in result.stderr
    assert not (tmp_path / "none").exists()


# ------------------------------------------------------------------ gold given by title, arXiv id or DOI


def test_gold_by_title_arxiv_id_or_doi_resolves_to_paper_ids(tmp_path: Path) -> None:
    from eval.datasets import resolve_gold
    from rag.index.corpus import Paper

    papers = {p.id: p for p in [
        Paper("Skywork-MoE: A Deep Dive", "An abstract.", arxiv_id="2406.06563"),
        Paper("Nyonic Technical Report", "An abstract.", doi="10.1234/Nyonic.7"),
        Paper("Schölkopf's Kernel Methods", "An abstract."),
    ]}
    path = write_jsonl(tmp_path / "mine.jsonl", [
        {"id": "a", "question": "q1", "gold": ["skywork-moe: a deep DIVE", "https://doi.org/10.1234/nyonic.7"]},
        {"id": "b", "question": "q2", "gold": ["arXiv:2406.06563v2", "Scholkopf's kernel methods"]},
        {"id": "c", "question": "q3", "gold": ["https://arxiv.org/abs/2406.06563", "doi:10.1234/nyonic.7"]},
        {"id": "d", "question": "q4", "gold": []},
    ])
    data = resolve_gold(read_jsonl(path), papers)
    title_id = next(pid for pid in papers if pid.startswith("title:"))
    assert [q.gold for q in data.questions] == [["arxiv:2406.06563", "doi:10.1234/nyonic.7"],
                                                ["arxiv:2406.06563", title_id], ["arxiv:2406.06563",
                                                "doi:10.1234/nyonic.7"], []]
    bad = write_jsonl(tmp_path / "typo.jsonl", [{"id": "a", "question": "q1", "gold": ["2406.06563"]},
                                                {"id": "b", "question": "q2", "gold": ["Skywork MoE Deep Dives"]}])
    with pytest.raises(InputError, match=r"typo.jsonl:2: gold 'Skywork MoE Deep Dives' matches no paper"):
        resolve_gold(read_jsonl(bad), papers)


def test_dev_set_resolves_to_itself() -> None:
    from eval.datasets import resolve_gold
    from rag.index.loaders import load_paths

    from .conftest import BUNDLED

    dev = load_dataset("dev")
    before = ([q.gold for q in dev.questions], dev.fingerprint)
    resolve_gold(dev, load_paths([BUNDLED]).papers)
    assert ([q.gold for q in dev.questions], dev.fingerprint) == before


def test_eval_run_with_unknown_gold_title_stops_before_anything_runs(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from eval.run import evaluate
    from rag.index.loaders import load_paths
    from rag.index.loaders import write_jsonl as write_corpus
    from rag.ingest.ingestor import Ingestor

    corpus = tmp_path / "three.jsonl"
    papers = list(load_paths([Path(__file__).parent.parent / "data" / "papers.jsonl"]).papers.values())[:3]
    write_corpus(papers, corpus)
    Ingestor(Settings(), embedder=embedder).run([corpus])
    questions = write_jsonl(tmp_path / "mine.jsonl", [
        {"id": "a", "question": papers[0].title, "gold": [papers[0].title.upper()]},
        {"id": "b", "question": "Which paper is not here?", "gold": ["A Paper Nobody Ingested"]}])
    with pytest.raises(InputError, match=r"mine.jsonl:2: gold 'A Paper Nobody Ingested' matches no paper"):
        evaluate(str(questions), backend="extractive", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    questions.write_text(questions.read_text().splitlines()[0] + "\n")
    outcome = evaluate(str(questions), backend="extractive", out=tmp_path / "run")
    assert outcome.summary["metrics"]["recall@5"]["value"] == 1.0
