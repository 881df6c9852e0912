"""Metrics: one question's answer -> numbers, many questions -> aggregates with 95% bootstrap CIs.

Per question (`score_question`, from a `Question` and an ``Answer.as_dict()``):

- retrieval (answerable questions): recall@1/@5/@10, MRR@10, nDCG@10, computed by ranx on
  the answer's ``retrieved`` list (its depth is ``answer.max_context_papers``: @10 metrics
  cannot see past it);
- answer: ``answer_match`` (any ``answers`` string is a case-insensitive substring of the
  answer); citation precision (cited papers that are gold) and recall (gold papers cited),
  on answered answerable questions only, so that abstention is scored once, below;
  ``invalid_citations`` (numbers that matched no source); ``unsupported_rate`` (share of
  answer sentences the evidence check did not support);
- abstention and correctness: ``correct`` is, for an answerable question, answered and
  (``answer_match`` when ``answers`` are given, else cites a gold paper); for an
  unanswerable one, abstained; ``None`` when the gold is unknown (thumbs-down feedback);
- trust: ``shown_unsupported_specifics`` (answer sentences on screen that the check did not
  support and that add a number or a name to the question: an invented value shown),
  ``language_match`` (non-English questions: the answer's own words, quotes left out, are in the
  question's language by `rag.answer.language.detect`), ``list_recall`` ("list" questions: gold papers
  cited, over the complete gold list), ``pair_cited`` ("comparison" questions: every named paper
  cited), ``keeps_subject`` (a conversation turn about the same paper as the turn before: that
  paper cited);
- latency: ``retrieval_s``, ``ttft_s``, ``total_s`` from the answer's timings.

Aggregates (`aggregate`) are all ratios of sums over questions, so one bootstrap (questions
resampled with replacement, fixed seed, 1000 resamples) gives every CI. PaperQA2's pair:
``precision`` = correct answers / answered questions (correct abstentions are not answers),
``accuracy`` = correct / all questions. Abstention ``precision``/``recall``/``f1`` treat
"abstained" as the positive prediction and "unanswerable" as the positive class.
`abstention_sweep` scores the abstention rule on a grid of thresholds (`rag eval calibrate`).

Left out: running questions (``eval.run``), paired tests between runs (``eval.compare``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from rag.answer import language
from rag.answer.claims import CITATION_MARKER, specifics
from rag.search.retrieval import low_confidence

RETRIEVAL = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
LATENCY = ("retrieval_s", "ttft_s", "total_s")
MEANS = (*RETRIEVAL, "answer_match", "citation_precision", "citation_recall", "invalid_citations",
         "unsupported_rate", "shown_unsupported_specifics", "language_match", "list_recall", "pair_cited",
         "keeps_subject", "faithfulness", "relevancy")
RATIOS = ("abstention_precision", "abstention_recall", "abstention_f1", "false_abstention_rate",
          "precision", "accuracy")
SEED, RESAMPLES = 0, 1000
# ranx's numba kernels run on numba's "workqueue" threading layer, which aborts the process
# when two Python threads launch parallel kernels at once (seen with `--workers 2`).
_RANX_LOCK = threading.Lock()


# ------------------------------------------------------------------ one question


def retrieval_scores(gold: Sequence[str], ranked: Sequence[str]) -> dict[str, float]:
    """ranx's recall@1/5/10, MRR@10 and nDCG@10 for one ranked list of paper ids.

    >>> retrieval_scores(["b"], ["a", "b", "c"])["mrr@10"]
    0.5
    """
    from ranx import Qrels, Run, evaluate

    ranked = list(dict.fromkeys(ranked))
    run = {pid: float(len(ranked) - i) for i, pid in enumerate(ranked)} or {"__none__": 0.0}
    with _RANX_LOCK:
        values = evaluate(Qrels({"q": {pid: 1 for pid in gold}}), Run({"q": run}), list(RETRIEVAL),
                          make_comparable=True)
    return {m: round(float(values[m]), 6) for m in RETRIEVAL}


def answer_match(answer: str, answers: Sequence[str]) -> bool | None:
    """Any expected string as a case-insensitive substring; None when there is none to expect."""
    if not answers:
        return None
    text = answer.lower()
    return any(a.lower() in text for a in answers if a)


def score_question(question: Any, answer: dict[str, Any]) -> dict[str, Any]:
    """Per-question metrics for an `eval.datasets.Question` and an ``Answer.as_dict()``."""
    gold = question.gold
    answerable = None if gold is None else bool(gold)
    abstained = bool(answer.get("abstained"))
    cited = list(dict.fromkeys(c["paper_id"] for c in answer.get("citations") or []))
    retrieved = [r["paper_id"] for r in answer.get("retrieved") or []]
    sentences = answer.get("sentences") or []
    timings = answer.get("timings") or {}
    out: dict[str, Any] = {"answerable": answerable, "abstained": abstained, "cited": cited}
    out |= retrieval_scores(gold, retrieved) if answerable else dict.fromkeys(RETRIEVAL)

    match = answer_match(answer.get("answer") or "", question.answers) if not abstained else (
        False if question.answers else None)
    gold_set = set(gold or [])
    cites_gold = bool(gold_set & set(cited)) if answerable else None
    on_answered = answerable and not abstained
    out["answer_match"] = match
    out["cites_gold"] = cites_gold
    out["citation_precision"] = (len(gold_set & set(cited)) / len(cited)) if on_answered and cited else None
    out["citation_recall"] = len(gold_set & set(cited)) / len(gold_set) if on_answered else None
    out["invalid_citations"] = int(answer.get("invalid_citations") or 0) if not abstained else None
    out["unsupported_rate"] = (sum(not s["supported"] for s in sentences) / len(sentences)
                               if sentences and not abstained else None)
    titles = " ".join(c.get("title") or "" for c in answer.get("citations") or [])  # naming them invents nothing
    out["shown_unsupported_specifics"] = (sum(bool(unsupported_specifics(s, f"{question.question} {titles}"))
                                              for s in sentences) if not abstained else None)
    out["language_match"] = (language.detect(prose(answer.get("answer") or "")) == question.lang
                             if question.lang != language.ENGLISH else None)
    out["list_recall"] = len(gold_set & set(cited)) / len(gold_set) if question.type == "list" and gold_set else None
    out["pair_cited"] = gold_set <= set(cited) if question.type == "comparison" and gold_set else None
    subject = set(question.subject or [])
    out["keeps_subject"] = bool(subject & set(cited)) if subject and subject == gold_set else None
    if answerable is None:
        correct = None
    elif answerable:
        correct = not abstained and bool(match if question.answers else cites_gold)
    else:
        correct = abstained
    out["correct"] = correct
    for key in LATENCY:
        out[key] = timings.get(key)
    return out


def prose(text: str) -> str:
    """An answer's own words: without quoted abstract sentences and citation markers (a quote keeps
    the abstract's language whatever the answer's).

    >>> prose('Los artículos no responden. Lo que dicen: \u201cWe train X.\u201d [1]')
    'Los artículos no responden. Lo que dicen:'
    """
    return " ".join(CITATION_MARKER.sub(" ", re.sub(r"\u201c[^\u201d]*\u201d", " ", text)).split())


def unsupported_specifics(sentence: dict[str, Any], question: str) -> list[str]:
    """The numbers and names a shown answer sentence adds to the question without a checked claim
    behind them (an invented value on screen): an unsupported sentence's, or one the checker took for
    no claim; [] for a supported claim. `score_question` passes the question with the cited papers'
    titles: a sentence that names the paper it cites ("SetFit (“Efficient Few-Shot Learning Without
    Prompts”) [1]") adds nothing invented.

    >>> unsupported_specifics({"text": "It used a learning rate of 0.001 [1].", "supported": False}, "Which lr?")
    ['0.001']
    >>> unsupported_specifics({"text": "HRA verwendet 3 Reflexionen.", "supported": True, "claim": False}, "HRA?")
    ['3']
    """
    if sentence.get("supported") and sentence.get("claim", True):
        return []
    return sorted(specifics(sentence.get("text") or "", question))


# ------------------------------------------------------------------ many questions


def _col(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    """A float column with NaN where the metric is undefined (None or missing)."""
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=float)


def _percentile(x: np.ndarray, q: float, idx: np.ndarray) -> np.ndarray:
    """The ``q``-th percentile of ``x`` over each row of ``idx`` (resampled question indices), NaNs ignored."""
    return np.asarray(np.nanpercentile(x[idx], q, axis=-1))


def _ratio(num: np.ndarray, den: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """sum(num)/sum(den) over each row of ``idx`` (resampled question indices); NaN when den is 0."""
    n, d = num[idx].sum(axis=-1), den[idx].sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d > 0, n / np.where(d > 0, d, 1), np.nan)


def _statistics(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]]:
    """name -> (statistic over index arrays, per-question 'defined' mask for the count n)."""
    stats: dict[str, tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]] = {}
    for key in MEANS:
        x = _col(rows, key)
        defined = ~np.isnan(x)
        if defined.any():
            num, den = np.nan_to_num(x), defined.astype(float)
            stats[key] = (partial(_ratio, num, den), defined)
    ans = _col(rows, "answerable")
    abst = _col(rows, "abstained")
    corr = _col(rows, "correct")
    known = ~np.isnan(ans)
    unans = known & (ans == 0)
    answerable = known & (ans == 1)
    abstained = abst == 1
    hit = (abstained & unans).astype(float)

    # F1 = 2TP / (2TP + FP + FN) = 2 * hits / (abstentions + unanswerable questions)
    f1_den = (abstained & known).astype(float) + unans.astype(float)

    if known.any():
        answered_known = (~abstained & known).astype(float)
        correct_answered = (np.nan_to_num(corr) == 1) & ~abstained
        stats |= {
            "abstention_precision": (lambda idx: _ratio(hit, (abstained & known).astype(float), idx),
                                     abstained & known),
            "abstention_recall": (lambda idx: _ratio(hit, unans.astype(float), idx), unans),
            "abstention_f1": (lambda idx: _ratio(2 * hit, f1_den, idx), known),
            "false_abstention_rate": (lambda idx: _ratio((abstained & answerable).astype(float),
                                                         answerable.astype(float), idx), answerable),
            "precision": (lambda idx: _ratio(correct_answered.astype(float), answered_known, idx),
                          answered_known > 0),
            "accuracy": (lambda idx: _ratio(np.nan_to_num(corr), known.astype(float), idx), known),
        }
    for key in LATENCY:
        x = _col(rows, key)
        defined = ~np.isnan(x)
        if defined.any():
            for name, q in (("median", 50), ("p95", 95)):
                stats[f"{key}.{name}"] = (partial(_percentile, x, q), defined)
    return stats


def aggregate(rows: Sequence[dict[str, Any]], resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, Any]:
    """{metric: {"value", "ci": [lo, hi], "n"}} with percentile-bootstrap 95% CIs.

    Every metric is computed on the same resamples of the questions (seeded), so the
    numbers are reproducible and consistent with one another.
    """
    rows = list(rows)
    if not rows:
        return {}
    everyone = np.arange(len(rows))
    idx = np.random.default_rng(seed).integers(0, len(rows), size=(resamples, len(rows)))
    out: dict[str, Any] = {}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples of rare metrics
        for name, (stat, defined) in _statistics(rows).items():
            value = float(stat(everyone))
            if np.isnan(value):
                continue
            boot = stat(idx)
            boot = boot[~np.isnan(boot)]
            lo, hi = (np.percentile(boot, [2.5, 97.5]) if boot.size else (np.nan, np.nan))
            out[name] = {"value": round(value, 4), "ci": [round(float(lo), 4), round(float(hi), 4)],
                         "n": int(defined.sum())}
    return out


def ratio_ci(num: Sequence[float], den: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED
             ) -> dict[str, Any]:
    """sum(num) / sum(den) over units (one value per unit: a paper's correct cells and its cells),
    with a percentile-bootstrap 95% CI resampling the units, as `aggregate` resamples questions.

    >>> ratio_ci([2, 1, 0], [2, 2, 2])["value"]
    0.5
    """
    n_arr, d_arr = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if not len(n_arr) or d_arr.sum() == 0:
        return {"value": None, "ci": [None, None], "n": int(d_arr.sum())}
    idx = np.random.default_rng(seed).integers(0, len(n_arr), size=(resamples, len(n_arr)))
    boot = _ratio(n_arr, d_arr, idx)
    boot = boot[~np.isnan(boot)]
    lo, hi = np.percentile(boot, [2.5, 97.5]) if boot.size else (np.nan, np.nan)
    value = float(_ratio(n_arr, d_arr, np.arange(len(n_arr))))
    return {"value": round(value, 4), "ci": [round(float(lo), 4), round(float(hi), 4)], "n": int(d_arr.sum())}


def by_type(rows: Sequence[dict[str, Any]], types: Sequence[str], resamples: int = RESAMPLES) -> dict[str, Any]:
    """`aggregate` per question type (rows and types in the same order)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row, t in zip(rows, types):
        groups.setdefault(t, []).append(row)
    return {t: {"n": len(g), "metrics": aggregate(g, resamples)} for t, g in groups.items()}


# ------------------------------------------------------------------ calibration


def abstention_sweep(dense_top: Sequence[float], coverage: Sequence[float], has_hits: Sequence[bool],
                     unanswerable: Sequence[bool], thresholds: Sequence[float],
                     coverages: Sequence[float]) -> list[dict[str, float]]:
    """Abstention quality of the rule ``no hits or (dense_top < t and coverage < c)`` per (t, c).

    >>> rows = abstention_sweep([0.1, 0.5], [0.0, 0.9], [True, True], [True, False], [0.3], [0.5])
    >>> rows[0]["f1"], rows[0]["false_abstention_rate"]
    (1.0, 0.0)
    """
    d, c = np.asarray(dense_top, float), np.asarray(coverage, float)
    empty, unans = ~np.asarray(has_hits, bool), np.asarray(unanswerable, bool)
    out = []
    for t in thresholds:
        for cov in coverages:
            abstain = empty | low_confidence(d, c, t, cov)
            tp = int((abstain & unans).sum())
            p = tp / abstain.sum() if abstain.any() else 0.0
            r = tp / unans.sum() if unans.any() else 0.0
            fa = float((abstain & ~unans).sum() / (~unans).sum()) if (~unans).any() else 0.0
            out.append({"abstain_threshold": round(float(t), 4), "abstain_coverage": round(float(cov), 4),
                        "precision": round(float(p), 4), "recall": round(float(r), 4),
                        "f1": round(float(2 * p * r / (p + r)), 4) if p + r else 0.0,
                        "false_abstention_rate": round(fa, 4), "abstained": int(abstain.sum())})
    return out


def recommend(sweep: Sequence[dict[str, float]], max_false: float = 0.05,
              current: tuple[float, float] | None = None) -> dict[str, float] | None:
    """The (threshold, coverage) with the best abstention F1 among those with false abstentions
    <= ``max_false``; ties go to fewer false abstentions, then to the pair nearest ``current``."""
    ok = [r for r in sweep if r["false_abstention_rate"] <= max_false + 1e-12]
    if not ok:
        return None
    cur = current or (0.0, 0.0)
    return min(ok, key=lambda r: (-r["f1"], r["false_abstention_rate"],
                                  abs(r["abstain_threshold"] - cur[0]) + abs(r["abstain_coverage"] - cur[1])))


__all__ = ["RETRIEVAL", "LATENCY", "MEANS", "RATIOS", "retrieval_scores", "answer_match", "score_question",
           "aggregate", "by_type", "abstention_sweep", "recommend"]
