"""Chunks fit the embedder's window, checked with the real tokenizer."""

from __future__ import annotations

import pytest

from rag.index.chunking import Chunker, split_sentences
from rag.index.corpus import Paper
from rag.index.loaders import load_paths

from .conftest import BUNDLED


def test_sentence_splitter_respects_abbreviations_and_numbers() -> None:
    text = ("Results improve by 3.5 points, e.g. on GLUE. Smith et al. report the same. "
            "We use J. Doe's method (see Fig. 2). Is it better? Yes!")
    assert split_sentences(text) == [
        "Results improve by 3.5 points, e.g. on GLUE.", "Smith et al. report the same.",
        "We use J. Doe's method (see Fig. 2).", "Is it better?", "Yes!"]


def test_every_bundled_chunk_fits_the_window_by_the_real_tokenizer(embedder) -> None:  # type: ignore[no-untyped-def]
    papers = list(load_paths([BUNDLED]).papers.values())
    chunks = Chunker(embedder).chunk(papers)
    lengths = embedder.count_tokens([c.embed_text for c in chunks])
    assert embedder.max_seq_length == 256
    assert max(lengths) <= 256
    assert len(chunks) > len(papers)  # most abstracts need more than one chunk
    by_paper: dict[str, list] = {}
    for c in chunks:
        by_paper.setdefault(c.paper_id, []).append(c)
    for paper in papers:
        mine = by_paper[paper.id]
        assert [c.index for c in mine] == list(range(len(mine)))
        assert " ".join(c.text for c in mine) == paper.abstract  # no overlap, nothing lost
        assert all(c.embed_text.startswith(paper.title) for c in mine)
        assert all(c.id == f"{paper.id}#{c.index}" for c in mine)


@pytest.mark.parametrize("max_tokens", [32, 64])
def test_small_windows_and_overlong_sentences(embedder, max_tokens: int) -> None:  # type: ignore[no-untyped-def]
    long_sentence = " ".join(["transformer-based retrieval augmentation"] * 40) + "."
    paper = Paper(title="A Title", abstract=f"Short one. {long_sentence} Another short one.")
    chunks = Chunker(embedder, max_tokens=max_tokens).chunk([paper])
    assert max(embedder.count_tokens([c.embed_text for c in chunks])) <= max_tokens
    assert " ".join(c.text for c in chunks).split() == paper.abstract.split()


def test_hash_changes_only_with_content(embedder) -> None:  # type: ignore[no-untyped-def]
    a = Chunker(embedder).chunk([Paper(title="T", abstract="One. Two.")])
    b = Chunker(embedder).chunk([Paper(title="T", abstract="One. Two.", authors=["X"])])
    c = Chunker(embedder).chunk([Paper(title="T", abstract="One. Three.")])
    assert a[0].hash == b[0].hash != c[0].hash
