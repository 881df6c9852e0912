"""Synthetic corpora for scale benchmarks, in the arXiv metadata snapshot format.

`generate` writes N papers as JSON Lines, one arXiv snapshot record per line (``id``,
``title``, ``abstract``, ``authors``, ``categories``, ``update_date``, ``doi``), so a
benchmark ingests them through the real loader path (`rag.index.loaders.load_paths`). Abstracts
are recombined from the sentences of the bundled abstracts (`rag.index.chunking.split_sentences`),
each with as many sentences as a randomly drawn real abstract, so lengths and vocabulary
follow the bundled corpus. Titles are recombined from the bundled titles' words and made
unique; ids are arXiv-style ``9XXX.NNNNN`` (a "99-era" new-style id that no real paper has,
since new-style ids began in 0704), unique for up to 100 million papers. The same seed
gives the same file, byte for byte. Records are written as they are made (constant memory).

    python -m eval.synthetic 10000 /tmp/synthetic-10k.jsonl

>>> synthetic_id(0), synthetic_id(123_456)
('9000.00000', '9001.23456')

Left out: realism beyond lengths and vocabulary (recombined sentences do not make sense
together, which is fine for timing and memory, not for answer quality).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag.bundled import CORPUS, bundled_file
from rag.index.chunking import split_sentences
from rag.index.corpus import normalise_title

BUNDLED = bundled_file(CORPUS)

FIRST = ["Ada", "Wei", "Priya", "Jonas", "Amara", "Luis", "Mei", "Omar", "Sofia", "Kenji", "Elena", "Tariq",
         "Chloe", "Ivan", "Nadia", "Ravi", "Greta", "Yusuf", "Hana", "Mateo", "Zara", "Felix", "Ines", "Kwame"]
LAST = ["Chen", "Okafor", "Müller", "Garcia", "Tanaka", "Singh", "Novak", "Haddad", "Kim", "Rossi", "Silva",
        "Ivanova", "Nguyen", "Dubois", "Kowalski", "Ahmed", "Larsen", "Moreau", "Yilmaz", "Park", "Costa", "Sato"]
CATEGORIES = ["cs.CL", "cs.LG", "cs.AI", "cs.CV", "cs.IR", "stat.ML", "cs.RO", "cs.NE", "cs.CR", "cs.SE"]


def synthetic_id(n: int) -> str:
    """The n-th synthetic arXiv id: ``9{n // 100000:03d}.{n % 100000:05d}``."""
    if not 0 <= n < 100_000_000:
        raise ValueError(f"synthetic ids cover 0..99,999,999, not {n}")
    return f"9{n // 100_000:03d}.{n % 100_000:05d}"


def _source(path: Path) -> tuple[list[list[str]], list[str]]:
    """Sentences of each bundled abstract, and the bundled titles."""
    abstracts, titles = [], []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                abstracts.append(split_sentences(record["abstract"]) or [record["abstract"]])
                titles.append(record["title"])
    if not abstracts:
        raise ValueError(f"{path} holds no papers to recombine")
    return abstracts, titles


def iter_records(n: int, seed: int = 0, source: Path = BUNDLED) -> Iterator[dict[str, Any]]:
    """N arXiv-snapshot records, deterministic for a seed; titles and ids unique."""
    rng = random.Random(seed)
    abstracts, titles = _source(source)
    pool = [s for sentences in abstracts for s in sentences]
    title_words = [t.replace(":", "").split() for t in titles]
    seen: set[str] = set()
    for i in range(n):
        length = len(rng.choice(abstracts))
        abstract = " ".join(rng.choice(pool) for _ in range(length))
        head, tail = rng.choice(title_words), rng.choice(title_words)
        cut_a, cut_b = rng.randint(1, max(1, len(head) - 1)), rng.randint(0, max(0, len(tail) - 1))
        title = " ".join(head[:cut_a] + tail[cut_b:])
        if normalise_title(title) in seen:  # rare: qualify it with the ordinal, always unique
            title = f"{title}, part {i}"
        seen.add(normalise_title(title))
        authors = [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(rng.randint(1, 6))]
        year = rng.randint(2007, 2025)
        yield {
            "id": synthetic_id(i),
            "title": title,
            "abstract": abstract,
            "authors": ", ".join(authors[:-1]) + (" and " if len(authors) > 1 else "") + authors[-1],
            "categories": " ".join(rng.sample(CATEGORIES, rng.randint(1, 3))),
            "update_date": f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "doi": None,
        }


def generate(n: int, path: str | Path, seed: int = 0, source: Path = BUNDLED) -> Path:
    """Write N synthetic papers to ``path`` (JSON Lines) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", buffering=1 << 20) as fh:
        for record in iter_records(n, seed, source):
            fh.write(json.dumps(record, ensure_ascii=False))
            fh.write("\n")
    return path


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m eval.synthetic N OUT.jsonl [SEED]")
    out = generate(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 0)
    print(out)
