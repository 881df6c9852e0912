"""The write path: corpus files -> an up-to-date index.

- `ingestor`: load, chunk, diff against the store, embed, write, refresh the lexical index (``Ingestor``,
  ``rebuild``, ``ingest_lock``);
- `ingest_summary`: what one ingest did, and the lines ``rag ingest`` and the web upload report.

Nothing on the read path (`rag.index`, `rag.search`, `rag.answer`, the backends) imports this folder:
``lint-imports`` checks it. Left out: the parts an ingest writes (`rag.index`).
"""
