"""`rag.integrations.llama_index` through llama-index-core's own calls: ``retrieve`` / ``aretrieve``
on the retriever, ``query`` / ``aquery`` on the query engine, and both composed with llama-index
parts (a node postprocessor, ``RetrieverQueryEngine`` with llama-index's ``MockLLM``).
The answers come from the extractive backend or `rag.testing.ScriptedBackend`: no LLM is loaded.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from llama_index.core.base.response.schema import Response
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore

from rag.answer.answerer import Answerer
from rag.integrations.llama_index import PaperQueryEngine, PaperRetriever
from rag.search.filters import Filters
from rag.search.retrieval import Retriever
from rag.settings import Settings
from rag.testing import ScriptedBackend
from tests.test_api import SKYWORK_ID, SKYWORK_Q

PLAMO_ID = "title:9b714b6bbbbb07e6"


@pytest.fixture
def settings(bundled_home: Path) -> Settings:
    return Settings(home=bundled_home, llm={"backend": "extractive"})


@pytest.fixture
def retriever(settings: Settings, embedder) -> Retriever:  # type: ignore[no-untyped-def]
    return Retriever(settings, embedder=embedder)


def test_import_rag_does_not_import_llama_index() -> None:
    code = "import sys, rag, rag.cli, rag.library; print(any(m.startswith('llama_index') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_retriever_returns_paper_rag_results_as_nodes(retriever: Retriever) -> None:
    ours = retriever.search("Skywork-MoE mixture of experts", k=4)
    nodes = PaperRetriever(retriever, k=4).retrieve("Skywork-MoE mixture of experts")
    assert all(isinstance(n, NodeWithScore) for n in nodes)
    assert [n.node.node_id for n in nodes] == [h.paper.id for h in ours.hits] and nodes[0].node.node_id == SKYWORK_ID
    assert [n.score for n in nodes] == [h.score for h in ours.hits]
    top, hit = nodes[0].node, ours.hits[0]
    assert top.get_content() == hit.paper.abstract
    expected = {"paper_id": SKYWORK_ID, "title": hit.paper.title, "chunk_id": hit.chunks[0].chunk_id,
                "chunk": hit.chunks[0].text, "score": hit.score, "dense": hit.dense, "lexical": hit.lexical,
                "dense_rank": 1, "lexical_rank": 1}
    assert top.metadata.items() >= expected.items()
    llm_view = top.get_content(metadata_mode=MetadataMode.LLM)
    assert llm_view.split("\n\n")[0] == f"title: {hit.paper.title}"  # no scores, no unknown year

    filtered = PaperRetriever(retriever, filters=Filters(paper_ids=frozenset({PLAMO_ID}))).retrieve("Skywork-MoE")
    assert [n.node.node_id for n in filtered] in ([PLAMO_ID], [])
    assert asyncio.run(PaperRetriever(retriever, k=2).aretrieve("Skywork-MoE"))[0].node.node_id == SKYWORK_ID

    # composed with llama-index parts: a postprocessor on the scores, a query engine with llama-index's mock LLM
    kept = SimilarityPostprocessor(similarity_cutoff=nodes[1].score + 1e-9).postprocess_nodes(nodes)
    assert [n.node.node_id for n in kept] == [SKYWORK_ID]
    engine = RetrieverQueryEngine.from_args(PaperRetriever(retriever, k=2), llm=MockLLM(max_tokens=8))
    composed = engine.query("Skywork-MoE experts")
    assert [n.node.node_id for n in composed.source_nodes][:1] == [SKYWORK_ID] and composed.response


def test_query_engine_answers_with_the_cited_papers_as_sources(settings: Settings, retriever: Retriever) -> None:
    engine = PaperQueryEngine(Answerer(settings, retriever=retriever), backend="extractive")
    response = engine.query(SKYWORK_Q)
    assert isinstance(response, Response) and "146 billion" in str(response) and "[1]" in response.response
    assert [n.node.node_id for n in response.source_nodes] == [SKYWORK_ID]
    source = response.source_nodes[0].node
    assert source.metadata["number"] == 1 and source.metadata["supported"] is True
    assert any("146 billion" in e["sentence"] for e in source.metadata["evidence"])
    assert response.metadata["backend"] == "extractive" and response.metadata["citations"][0]["paper_id"] == SKYWORK_ID
    assert asyncio.run(engine.aquery(SKYWORK_Q)).response == response.response


def test_sources_are_the_cited_papers_only_in_citation_order(settings: Settings, retriever: Retriever) -> None:
    backend = ScriptedBackend("Skywork-MoE has 146 billion parameters [2]. It upcycles dense checkpoints [2].")
    cfg = settings.model_copy(update={"llm": settings.llm.model_copy(update={"backend": "llamacpp"})})
    engine = PaperQueryEngine(Answerer(cfg, retriever=retriever, backend=backend), k=3)
    response = engine.query(SKYWORK_Q)
    retrieved = response.metadata["also_retrieved"] + response.metadata["citations"]
    assert len(retrieved) == 3 and len(response.source_nodes) == 1  # three papers in the prompt, one cited
    assert response.source_nodes[0].node.node_id == SKYWORK_ID
    assert response.response.count("[1]") == 2  # renumbered: the first paper cited is [1]


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_the_readme_snippet_keeps_the_top_papers_whatever_the_score_scale(
        bundled_home: Path, monkeypatch: pytest.MonkeyPatch, fusion: str) -> None:
    """The README's llama-index example, run as written: its cutoff is relative to the top paper, so
    it keeps the best papers under any fusion (``rrf`` scores are about 0.016: a fixed 0.5 kept none)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Inside llama-index pipelines", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("RAG_HOME", str(bundled_home))
    monkeypatch.setenv("RAG_RETRIEVAL__FUSION", fusion)
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own documentation
    nodes = scope["nodes"]
    assert isinstance(nodes, list) and nodes and nodes[0].node.node_id == SKYWORK_ID
    assert "146 billion" in str(scope["response"])
