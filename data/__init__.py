"""The files paper-rag ships (the bundled corpus, the question sets): the package ``rag.data``.

pyproject.toml maps this folder to ``rag.data``; read them through `rag.bundled`, never by path.
"""
