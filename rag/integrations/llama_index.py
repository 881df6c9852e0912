"""paper-rag inside llama-index pipelines (llama-index-core 0.14): a retriever and a query engine.

- `PaperRetriever` (a ``BaseRetriever``): `rag.search.retrieval.Retriever.search` - hybrid dense + BM25,
  grouped by paper - as one ``NodeWithScore`` per paper, best first. The node's id is the paper
  id, its text the abstract, its score the fused score; its metadata holds ``paper_id``,
  ``title``, ``year``, ``authors``, ``url``, the best chunk (``chunk_id``, ``chunk``) and the
  scores (``score``, ``dense``, ``lexical``, ``dense_rank``, ``lexical_rank``). Only the title,
  year and authors (when known) reach an LLM or an embedder (``excluded_*_metadata_keys``);
- `PaperQueryEngine` (a ``BaseQueryEngine``): `rag.answer.answerer.Answerer` - abstention, per-paper
  ``[n]`` citations checked against the abstracts - as a ``Response`` whose text is the cited
  answer, whose ``source_nodes`` are the *cited* papers in citation order (metadata ``number``,
  ``supported``, ``evidence``), and whose ``metadata`` is the ``rag ask --json`` object.

Example::

    from rag.integrations.llama_index import PaperQueryEngine, PaperRetriever
    nodes = PaperRetriever(k=3).retrieve("mixture-of-experts upcycling")
    response = PaperQueryEngine().query("How many parameters does Skywork-MoE have?")
    print(response.response, [n.node.metadata["title"] for n in response.source_nodes])

Left out: streaming responses (the sources are only known once the answer is checked), chat
engines (compose with ``rag.chat.Conversation`` instead), and llama-index's own LLM and
embedding settings (paper-rag's settings choose the models).
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import Response
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag.answer.answer_result import Answer, Citation
from rag.answer.answerer import Answerer
from rag.index.corpus import Paper
from rag.render.view import citation_supported
from rag.search.filters import Filters
from rag.search.retrieval import PaperHit, Retriever
from rag.settings import Settings

LLM_KEYS = ("title", "year", "authors")  # the metadata an LLM or embedder sees with the abstract


def paper_node(paper: Paper, metadata: dict[str, Any]) -> TextNode:
    """A node for one paper: id = paper id, text = abstract, metadata as given (plus the record's)."""
    meta = {"paper_id": paper.id, "title": paper.title, "year": paper.year, "authors": paper.authors,
            "url": paper.links[0] if paper.links else None, **metadata}
    hidden = [key for key, value in meta.items() if key not in LLM_KEYS or value in (None, [])]
    return TextNode(id_=paper.id, text=paper.abstract, metadata=meta, excluded_llm_metadata_keys=hidden,
                    excluded_embed_metadata_keys=hidden)


def hit_node(hit: PaperHit) -> NodeWithScore:
    best = hit.chunks[0] if hit.chunks else None
    meta = {"chunk_id": best.chunk_id if best else None, "chunk": best.text if best else None,
            "score": hit.score, "dense": hit.dense, "lexical": hit.lexical, "dense_rank": hit.dense_rank,
            "lexical_rank": hit.lexical_rank}
    return NodeWithScore(node=paper_node(hit.paper, meta), score=hit.score)


def citation_node(citation: Citation, threshold: float) -> NodeWithScore:
    evidence = [e.as_dict() for e in citation.evidence]
    meta = {"number": citation.number, "score": citation.score, "evidence": evidence,
            "supported": citation_supported(citation, threshold)}
    return NodeWithScore(node=paper_node(citation.paper, meta), score=citation.score)


class PaperRetriever(BaseRetriever):
    """paper-rag's hybrid, per-paper retrieval as a llama-index retriever.

    ``retriever``: an existing `rag.search.retrieval.Retriever` (shares its models and index); else one
    is made from ``settings`` (default: ``Settings()``, the ``RAG_*`` environment). ``k`` papers
    (default ``RAG_RETRIEVAL__K``), ``filters`` as in ``rag search``."""

    def __init__(self, retriever: Retriever | None = None, settings: Settings | None = None, k: int | None = None,
                 filters: Filters | None = None, callback_manager: CallbackManager | None = None) -> None:
        self.rag_retriever = retriever or Retriever(settings or Settings())
        self.k, self.filters = k, filters
        super().__init__(callback_manager=callback_manager)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        result = self.rag_retriever.search(query_bundle.query_str, k=self.k, filters=self.filters)
        return [hit_node(hit) for hit in result.hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


class PaperQueryEngine(BaseQueryEngine):
    """paper-rag's cited answers as a llama-index query engine.

    ``answerer``: an existing `rag.answer.answerer.Answerer`; else one from ``settings``. ``backend``
    overrides the configured answer backend (``extractive`` needs no LLM); ``k`` papers go into
    the prompt; ``filters`` as in ``rag ask``."""

    def __init__(self, answerer: Answerer | None = None, settings: Settings | None = None, k: int | None = None,
                 filters: Filters | None = None, backend: str | None = None,
                 callback_manager: CallbackManager | None = None) -> None:
        self.answerer = answerer or Answerer(settings or Settings())
        self.k, self.filters, self.backend = k, filters, backend
        super().__init__(callback_manager=callback_manager)

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}  # the prompts are paper-rag's (rag.answer.prompts), not llama-index prompt templates

    def response(self, answer: Answer) -> Response:
        threshold = self.answerer.settings.answer.support_threshold
        return Response(response=answer.answer, source_nodes=[citation_node(c, threshold) for c in answer.citations],
                        metadata=answer.as_dict())

    def _query(self, query_bundle: QueryBundle) -> Response:
        answer = self.answerer.ask(query_bundle.query_str, k=self.k, filters=self.filters, backend=self.backend)
        return self.response(answer)

    async def _aquery(self, query_bundle: QueryBundle) -> Response:
        return await asyncio.to_thread(self._query, query_bundle)


__all__ = ["PaperQueryEngine", "PaperRetriever", "citation_node", "hit_node"]
