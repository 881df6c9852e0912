"""Adapters that let other frameworks use paper-rag's retrieval and cited answers.

Each adapter is its own module and imports its framework there, so ``import rag`` never pulls
one in: ``from rag.integrations.llama_index import PaperRetriever``.
"""
