"""Per-paper scores from the dense and the lexical retriever -> one ranking.

`fuse` mixes the two lists (``weighted``: min-max scaled and mixed; ``rrf``: reciprocal rank
fusion; or one retriever alone), `name_bonus` lifts the papers that contain the method
names a query quotes (`query_names`) verbatim, and `mmr` spreads near-duplicate papers.
Left out: running the retrievers, grouping chunks into papers and the confidence of a
result (`rag.search.retrieval`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from rag.index.corpus import Paper

NAME_BOOST = 0.2  # share of the best fused score added for quoting every name in the query verbatim
_NAME = re.compile(r"(?<![\w-])(?=[\w.-]*[A-Z])(?=[\w.-]*[A-Za-z])[A-Za-z0-9]+(?:[-.][A-Za-z0-9]+)+(?![\w-])"
                   r"|(?<![\w-])[A-Z][A-Za-z]*[A-Z][A-Za-z0-9]*(?![\w-])")


def query_names(query: str) -> list[str]:
    """Method and model names in a query: mixed-case or hyphenated identifiers and acronyms.

    >>> query_names("How does DRA-GRPO compare with GRPO and PLaMo-100B on the MATH set?")
    ['DRA-GRPO', 'GRPO', 'PLaMo-100B', 'MATH']
    """
    return list(dict.fromkeys(m.group(0) for m in _NAME.finditer(query)))


def name_bonus(fused: dict[str, float], papers: Mapping[str, Paper], names: list[str]) -> dict[str, float]:
    """Add ``NAME_BOOST`` x (share of the query's names the paper contains verbatim) x the best score.

    BM25 splits "DRA-GRPO" into "dra" and "grpo", so a paper about SEED-GRPO matches as well
    as the one the user named; an exact, case-sensitive match of the whole name settles it.
    A name found in more than two candidate papers ("LLMs", "NLP") tells nothing and is skipped.
    """
    if not names or not fused:
        return fused
    telling = telling_names(names, [papers[pid] for pid in fused])
    if not telling:
        return fused
    top = max(fused.values())
    return {pid: score + NAME_BOOST * top * sum(pid in pids for pids in telling.values()) / len(names)
            for pid, score in fused.items()}


def telling_names(names: list[str], papers: list[Paper]) -> dict[str, set[str]]:
    """Each of ``names`` that one or two of ``papers`` hold verbatim (title or abstract) -> their ids:
    the names that single a paper out. A name in three or more ("LLMs", "NLP") tells nothing."""
    found: dict[str, set[str]] = {}
    for paper in papers:
        text = f"{paper.title} {paper.abstract}"
        for name in names:
            if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text):
                found.setdefault(name, set()).add(paper.id)
    return {name: pids for name, pids in found.items() if len(pids) <= 2}


def _minmax(scores: dict[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    return {p: (v - lo) / (hi - lo) if hi > lo else 1.0 for p, v in scores.items()}


def fuse(dense: dict[str, float], lexical: dict[str, float], method: str, weight: float,
         rrf_k: int) -> dict[str, float]:
    """Paper scores from per-paper dense cosines and BM25 scores.

    ``weighted`` min-max scales each retriever's scores over its candidates (a paper
    missing from a list gets 0 from it), then mixes them: measured on the title ->
    abstract task it beats RRF (recall@1 0.940 vs 0.897) and either retriever alone.

    >>> fuse({"a": 0.9, "b": 0.5}, {"b": 10.0, "c": 2.0}, "weighted", 0.5, 60)
    {'a': 0.5, 'b': 0.5, 'c': 0.0}
    """
    if method == "dense":
        return dict(dense)
    if method == "lexical":
        return dict(lexical)
    papers = list(dict.fromkeys([*dense, *lexical]))
    if method == "rrf":
        d_rank = {p: i for i, p in enumerate(sorted(dense, key=dense.__getitem__, reverse=True), 1)}
        l_rank = {p: i for i, p in enumerate(sorted(lexical, key=lexical.__getitem__, reverse=True), 1)}
        return {p: (1 / (rrf_k + d_rank[p]) if p in d_rank else 0) + (1 / (rrf_k + l_rank[p]) if p in l_rank else 0)
                for p in papers}
    d, lx = _minmax(dense), _minmax(lexical)
    return {p: round(weight * d.get(p, 0.0) + (1 - weight) * lx.get(p, 0.0), 12) for p in papers}


def mmr(order: list[str], vectors: dict[str, np.ndarray], scores: dict[str, float], k: int, lam: float) -> list[str]:
    """Maximal marginal relevance over papers: relevance minus redundancy with those already picked."""
    picked: list[str] = []
    pool = [p for p in order if p in vectors] + [p for p in order if p not in vectors]
    top = max(scores.values(), default=1.0) or 1.0
    while pool and len(picked) < k:
        def gain(p: str) -> float:
            if p not in vectors or not picked:
                return lam * scores[p] / top
            redundancy = max(float(vectors[p] @ vectors[q]) for q in picked if q in vectors) if any(
                q in vectors for q in picked) else 0.0
            return lam * scores[p] / top - (1 - lam) * redundancy
        best = max(pool, key=gain)
        picked.append(best)
        pool.remove(best)
    return picked
