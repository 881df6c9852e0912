"""The index both paths share: papers, their chunks and vectors, and the stores that keep them.

- the papers: `corpus` (the `Paper` record), `loaders` (corpus files -> papers), `bibtex` (a paper as
  BibTeX), `injection` (sentences in corpus text that address a model), `paper_names` (the paper an
  id, arXiv id, DOI or exact title names);
- their parts: `chunking` (papers -> chunks that fit the embedder; its sentence splitter is the one the
  answer step reads), `embeddings` and `onnx_encoder` (text -> vectors);
- the stores: `store` (the Chroma collection) with `chroma_client`, `index_health`, `store_errors` and
  `chunk_records`; `lexical` (the BM25 index and the paper catalogue on disk) with `bm25_writer` and
  `catalogue`.

Left out: writing an index from corpus files (`rag.ingest`), searching it (`rag.search`), answering
from it (`rag.answer`): this folder imports none of them.
"""
