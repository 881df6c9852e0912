"""The files paper-rag ships: the bundled corpus and the question sets.

In the repository they live in the top-level ``data/`` folder; pyproject.toml maps that folder to
the package ``rag.data``, so a wheel carries them and an editable install reads them in place.
Everything that needs one asks here (`bundled_file`), never for a path relative to the checkout.
Left out: reading them (`rag.index.corpus`, ``eval.datasets``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

CORPUS = "papers.jsonl"  # the bundled corpus: 184 recent ML papers
DEV_SET = "eval/dev.jsonl"  # the development question set (also the web chat's example questions)
# questions written apart from the dev set (issue 21), split before any tuning: tune on one half, score the other
HOLDOUT_SETS = {"holdout-dev": "eval/holdout-dev.jsonl", "holdout-test": "eval/holdout-test.jsonl"}
TABLE_GOLD = "eval/table-gold.jsonl"  # 20 bundled papers x the built-in table columns, copied from the abstracts


def bundled_file(name: str) -> Path:
    """The path of a shipped file, e.g. ``bundled_file(CORPUS)``; it exists in every install.

    >>> bundled_file(CORPUS).name
    'papers.jsonl'
    """
    return Path(str(files("rag.data").joinpath(name)))


__all__ = ["CORPUS", "DEV_SET", "HOLDOUT_SETS", "TABLE_GOLD", "bundled_file"]
