"""`Paper` -> `Chunk`s that fit the embedder's window, split at sentence boundaries.

Each chunk is a run of whole sentences of one abstract; the text that is embedded is
``"{title}. {sentences}"`` so every chunk carries its paper's title. Token counts come
from the embedder's own tokenizer and every chunk is checked against
``max_tokens`` (default: the model's ``max_seq_length``, 256 for all-MiniLM-L6-v2):

>>> # a 3-sentence abstract whose sentences are 90, 100 and 80 word pieces, title 12:
>>> # chunk 0 = sentences 0-1 (12+90+100+3 <= 256), chunk 1 = sentence 2.

A sentence longer than the whole window is cut at word boundaries. Chunks do not
overlap, so the abstract is exactly the chunks' texts joined by spaces. Left out:
embedding and storage.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from rag.index.corpus import Paper

_ABBREVIATIONS = {"e.g", "i.e", "et al", "al", "vs", "etc", "fig", "figs", "eq", "eqs", "ref", "refs",
                  "sec", "no", "approx", "cf", "resp", "dr", "prof", "mr", "ms", "st", "inc", "ltd", "viz"}
_BOUNDARY = re.compile(r"[.!?][\"'”’)\]]*(\s+)(?=[\"'“‘(\[]?[A-Z0-9])")


class Tokenizing(Protocol):
    @property
    def max_seq_length(self) -> int: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


@dataclass(frozen=True)
class Chunk:
    id: str          # "{paper_id}#{index}"
    paper_id: str
    index: int
    text: str        # the abstract sentences, as shown to users
    embed_text: str  # title + text, what is embedded and lexically indexed
    hash: str        # sha1 of embed_text: unchanged chunks are never re-embedded


def chunk_id(paper_id: str, index: int) -> str:
    """The id of a paper's ``index``-th chunk, the one place that writes the format.

    >>> chunk_id("title:7a92", 1), paper_of("title:7a92#1"), chunk_index("title:7a92#1")
    ('title:7a92#1', 'title:7a92', 1)
    """
    return f"{paper_id}#{index}"


def paper_of(chunk: str) -> str:
    """The paper id in a chunk id (the last ``#`` separates: a paper id may hold one)."""
    return chunk.rsplit("#", 1)[0]


def chunk_index(chunk: str) -> int:
    """The chunk's position within its paper."""
    return int(chunk.rsplit("#", 1)[1])


def split_sentences(text: str) -> list[str]:
    """Sentences of an abstract, without splitting at "e.g.", "et al." or initials.

    >>> split_sentences("We use e.g. BERT. It works, cf. Fig. 2. Done!")
    ['We use e.g. BERT.', 'It works, cf. Fig. 2.', 'Done!']
    """
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(text):
        before = text[start:m.start(1)].rstrip("\"'”’)]")
        last_word = before.rsplit(None, 1)[-1].rstrip(".!?").lower() if before.strip() else ""
        if last_word in _ABBREVIATIONS or re.fullmatch(r"[a-z]", last_word) or last_word.endswith("e.g"):
            continue
        sentences.append(text[start:m.start(1)].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class Chunker:
    """Packs sentences greedily up to ``max_tokens`` word pieces, title included."""

    def __init__(self, tokenizer: Tokenizing, max_tokens: int | None = None, include_title: bool = True) -> None:
        self.tokenizer = tokenizer
        self.include_title = include_title
        self.max_tokens = min(max_tokens or tokenizer.max_seq_length, tokenizer.max_seq_length)

    def _prefix(self, title: str) -> str:
        if not self.include_title:
            return ""
        return f"{title}. " if title and title[-1] not in ".?!" else f"{title} "

    def chunk(self, papers: Iterable[Paper]) -> list[Chunk]:
        papers = list(papers)
        sentences = [split_sentences(p.abstract) or [p.abstract] for p in papers]
        prefixes = [self._prefix(p.title) for p in papers]
        flat = [s for group in sentences for s in group]
        # One batched tokenizer call for all sentences and titles; counts include the 2
        # special tokens once per text, so each piece's own length is count - 2.
        counts = self.tokenizer.count_tokens(flat + prefixes)
        special = self.tokenizer.count_tokens([""])[0]
        sentence_len, prefix_len = counts[: len(flat)], counts[len(flat):]
        chunks: list[Chunk] = []
        pos = 0
        for paper, group, prefix, plen in zip(papers, sentences, prefixes, prefix_len):
            lens = [n - special for n in sentence_len[pos:pos + len(group)]]
            pos += len(group)
            budget = self.max_tokens - plen  # plen already holds the special tokens once
            if budget < 16:  # a title that fills the window: drop it from the embedded text
                prefix, budget = "", self.max_tokens - special
            texts = self._pack(group, lens, budget)
            chunks += [self._make(paper.id, i, prefix, t) for i, t in enumerate(texts)]
        return self._enforce(chunks)

    def _pack(self, sentences: list[str], lens: list[int], budget: int) -> list[str]:
        packed: list[str] = []
        current: list[str] = []
        used = 0
        for sentence, n in zip(sentences, lens):
            if n > budget:  # one sentence longer than the window: cut it by words
                if current:
                    packed.append(" ".join(current))
                    current, used = [], 0
                packed += self._cut_words(sentence, budget)
                continue
            if current and used + n > budget:
                packed.append(" ".join(current))
                current, used = [], 0
            current.append(sentence)
            used += n
        if current:
            packed.append(" ".join(current))
        return packed

    def _cut_words(self, sentence: str, budget: int) -> list[str]:
        words = sentence.split()
        lens = [n - self.tokenizer.count_tokens([""])[0] for n in self.tokenizer.count_tokens(words)]
        return self._pack(words, lens, budget) if max(lens) <= budget else [sentence[: budget * 2]]

    def _make(self, paper_id: str, index: int, prefix: str, text: str) -> Chunk:
        embed_text = prefix + text
        return Chunk(chunk_id(paper_id, index), paper_id, index, text, embed_text, _hash(embed_text))

    def _enforce(self, chunks: list[Chunk]) -> list[Chunk]:
        """Re-check with the real tokenizer (counts are not always additive) and split what is over."""
        counts = self.tokenizer.count_tokens([c.embed_text for c in chunks])
        if all(n <= self.max_tokens for n in counts):
            return chunks
        out: list[Chunk] = []
        by_paper: dict[str, list[tuple[Chunk, int]]] = {}
        for chunk, n in zip(chunks, counts):
            by_paper.setdefault(chunk.paper_id, []).append((chunk, n))
        for paper_id, items in by_paper.items():
            texts: list[str] = []
            prefix = items[0][0].embed_text[: len(items[0][0].embed_text) - len(items[0][0].text)]
            for chunk, n in items:
                texts += self._halve(chunk.text, prefix) if n > self.max_tokens else [chunk.text]
            out += [self._make(paper_id, i, prefix, t) for i, t in enumerate(texts)]
        return out

    def _halve(self, text: str, prefix: str) -> list[str]:
        words = text.split()
        if len(words) < 2:
            return [text]
        parts = [" ".join(words[: len(words) // 2]), " ".join(words[len(words) // 2:])]
        counts = self.tokenizer.count_tokens([prefix + p for p in parts])
        return [q for p, n in zip(parts, counts) for q in (self._halve(p, prefix) if n > self.max_tokens else [p])]
