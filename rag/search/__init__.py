"""The search: a query -> ranked papers.

- `retrieval`: dense (Chroma) and lexical (BM25) retrieval, grouped per paper, with its confidence;
- `ranking`: the two lists fused, the name bonus, MMR;
- `filters`: year, author, category and ids -> the papers a search may return.

Left out: the stores it reads (`rag.index`) and the answer made from what it finds (`rag.answer`).
"""
