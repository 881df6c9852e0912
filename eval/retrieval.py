"""Retrieval evaluation: the title -> abstract task and any question set with gold papers.

The title task builds a private index of the corpus's abstracts *without* their titles
(so the title cannot match itself) and queries it with each title; the gold paper is the
title's own. Metrics (recall@k, MRR@10, nDCG@10) come from ranx. Left out: answer
quality (``eval.run``), plots.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rag.index.corpus import Paper
from rag.index.embeddings import Embedder
from rag.index.loaders import load_paths
from rag.search.retrieval import Retriever
from rag.settings import Settings

METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
METHODS = ("dense", "lexical", "hybrid")


def title_task(papers: Iterable[Paper]) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Queries {qid: title} and qrels {qid: {paper_id: 1}}."""
    queries, qrels = {}, {}
    for i, paper in enumerate(papers):
        qid = f"t{i:05d}"
        queries[qid], qrels[qid] = paper.title, {paper.id: 1}
    return queries, qrels


def abstract_only_retriever(papers: Sequence[Paper], home: Path, embedder: Embedder,
                            base: Settings | None = None) -> Retriever:
    """An index of abstracts without titles in ``home`` (chunks and BM25 both title-free)."""
    from rag.index.loaders import LoadReport
    from rag.ingest.ingestor import Ingestor

    base = base or Settings()
    settings = base.model_copy(update={
        "home": home, "chunking": base.chunking.model_copy(update={"include_title": False}),
        "store": base.store.model_copy(update={"chroma_url": None}),
    })
    report = LoadReport()
    for paper in papers:
        report.add(replace(paper))
    Ingestor(settings, embedder=embedder).run(report=report)
    return Retriever(settings, embedder=embedder)


def run_methods(retriever: Retriever, queries: dict[str, str], k: int = 10,
                methods: Sequence[str] = METHODS) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {qid: {paper_id: score}}}; ``hybrid`` is the configured fusion."""
    runs: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
    fusion = {"dense": "dense", "lexical": "lexical", "hybrid": None}
    for qid, query in queries.items():
        for method in methods:
            result = retriever.search(query, k=k, fusion=fusion.get(method, method))
            n = len(result.hits)
            # rank-derived scores: ranx re-sorts by score, and ties must not reorder
            runs[method][qid] = {h.paper.id: float(n - i) for i, h in enumerate(result.hits)}
    return runs


def score(qrels: dict[str, dict[str, int]], runs: dict[str, dict[str, dict[str, float]]],
          metrics: Sequence[str] = METRICS) -> dict[str, dict[str, float]]:
    """ranx metrics per method, averaged over queries."""
    from ranx import Qrels, Run, evaluate

    q = Qrels(qrels)
    out = {}
    for method, run in runs.items():
        filled = {qid: run.get(qid) or {"__none__": 0.0} for qid in qrels}
        values = evaluate(q, Run(filled), list(metrics), make_comparable=True)
        out[method] = {m: round(float(values[m]), 4) for m in metrics}
    return out


def evaluate_title_task(corpus: Sequence[str | Path], settings: Settings | None = None,
                        embedder: Embedder | None = None, methods: Sequence[str] = METHODS) -> dict[str, Any]:
    papers = list(load_paths(corpus).papers.values())
    embedder = embedder or Embedder((settings or Settings()).embedding)
    with tempfile.TemporaryDirectory(prefix="rag-title-task-") as tmp:
        retriever = abstract_only_retriever(papers, Path(tmp), embedder, settings)
        queries, qrels = title_task(papers)
        return score(qrels, run_methods(retriever, queries, methods=methods))


def load_questions(path: str | Path) -> list[dict[str, Any]]:
    """Single questions of a dataset, and each conversation turn as its own question
    (with the earlier turns' questions prefixed, the way a condensed query would read)."""
    import json

    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "turns" in record:
            context = ""
            for i, turn in enumerate(record["turns"]):
                out.append({**turn, "id": f"{record['id']}.t{i + 1}", "type": record.get("type", "conversation"),
                            "retrieval_query": (context + " " + turn["question"]).strip()})
                context += " " + turn["question"]
        else:
            out.append(record)
    return out


def evaluate_dataset(path: str | Path, settings: Settings | None = None,
                     methods: Sequence[str] = METHODS) -> dict[str, dict[str, float]]:
    """Retrieval metrics on the answerable questions of a dataset, against the configured index."""
    settings = settings or Settings()
    retriever = Retriever(settings)
    questions = [q for q in load_questions(path) if q.get("gold")]
    queries = {q["id"]: q.get("retrieval_query", q["question"]) for q in questions}
    qrels = {q["id"]: {pid: 1 for pid in q["gold"]} for q in questions}
    return score(qrels, run_methods(retriever, queries, methods=methods))
