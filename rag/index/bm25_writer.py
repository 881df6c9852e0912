"""A BM25 index written batch by batch to bm25s's on-disk format, in memory bounded by the vocabulary.

``bm25s.BM25.index`` needs every tokenized document at once (its peak memory grows with the
corpus: ~0.5 GB at 150k chunks); `BM25Writer` takes documents in batches, keeps only what the
index needs while it grows (the vocabulary, each term's document frequency, each document's
length), spills each batch's (term, frequency) pairs to a scratch file, and in `BM25Writer.finish`
turns them into the score matrix (lucene BM25, bm25s's defaults: k1 1.5, b 0.75) in blocks,
straight into memory-mapped ``.npy`` files. ``bm25s.BM25.load(folder, mmap=True)`` reads the
result, and its scores equal bm25s's own index of the same tokens (tests check it):

>>> import tempfile, bm25s
>>> folder = Path(tempfile.mkdtemp())
>>> writer = BM25Writer(folder)
>>> writer.add([["cat", "sat"], ["dog", "sat", "sat"]])
>>> writer.finish()
2
>>> bm25 = bm25s.BM25.load(str(folder), mmap=True)
>>> [round(float(s), 3) for s in bm25.get_scores(["dog"])]
[0.0, 0.254]

Left out: tokenizing (the caller passes tokens) and querying (bm25s).
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np

K1, B, DELTA = 1.5, 0.75, 0.5
BLOCK = 1 << 18  # (document, term) pairs scored per step of `finish` (~70 MB of numpy temporaries at 1 << 20)


def _release(*arrays: np.ndarray) -> None:
    """Write memory-mapped arrays' pages to disk and drop them from this process's memory (the
    scattered writes of `BM25Writer.finish` would otherwise keep the whole matrix resident)."""
    import mmap

    for mapped in arrays:
        mapped.flush()  # type: ignore[attr-defined]
        buffer = getattr(mapped, "_mmap", None)
        if buffer is not None and hasattr(mmap, "MADV_DONTNEED"):
            buffer.madvise(mmap.MADV_DONTNEED)


class BM25Writer:
    """Collects documents (lists of tokens) in order; `finish` writes the index into ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.vocab: dict[str, int] = {}
        self.df = np.zeros(1024, dtype=np.int64)
        self.doc_lens = array("i")
        self.doc_terms = array("i")  # distinct terms per document: where its pairs end in the scratch file
        self._scratch = self.folder / "pairs.tmp"
        self._pairs = self._scratch.open("wb")

    def add(self, docs: Sequence[Sequence[str]]) -> None:
        """Append documents; their row numbers follow those already added."""
        ids: list[int] = []
        owner: list[int] = []
        vocab = self.vocab
        for i, tokens in enumerate(docs):
            self.doc_lens.append(len(tokens))
            for token in tokens:
                ids.append(vocab.setdefault(token, len(vocab)))
            owner.extend([i] * len(tokens))
        if len(vocab) > len(self.df):
            self.df = np.concatenate([self.df, np.zeros(max(len(vocab), 2 * len(self.df)) - len(self.df), np.int64)])
        if not ids:
            self.doc_terms.extend([0] * len(docs))
            return
        keys = (np.asarray(owner, dtype=np.int64) << 32) | np.asarray(ids, dtype=np.int64)
        pairs, tf = np.unique(keys, return_counts=True)  # sorted by document, then term
        doc, term = (pairs >> 32).astype(np.int32), (pairs & 0xFFFFFFFF).astype(np.int32)
        np.add.at(self.df, term, 1)
        self.doc_terms.extend(np.bincount(doc, minlength=len(docs)).tolist())
        self._pairs.write(np.stack([term, tf.astype(np.int32)], axis=1).astype(np.int32).tobytes())

    def abandon(self) -> None:
        """Close and remove the scratch file: an index of no documents is not written."""
        self._pairs.close()
        self._scratch.unlink(missing_ok=True)

    def finish(self) -> int:
        """Write ``data``/``indices``/``indptr`` (CSC over terms), ``vocab`` and ``params``; the number of documents."""
        self._pairs.close()
        self.vocab.setdefault("", len(self.vocab))  # bm25s's empty token: scores documents no query term matches
        n_docs, n_terms = len(self.doc_lens), len(self.vocab)
        df = np.zeros(n_terms, dtype=np.int64)
        df[: min(n_terms, len(self.df))] = self.df[:n_terms]
        lens = np.frombuffer(self.doc_lens, dtype=np.int32).astype(np.float64) if n_docs else np.zeros(0)
        avg = float(lens.mean()) if n_docs and lens.mean() > 0 else 1.0
        idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        nnz = int(indptr[-1])
        data = np.lib.format.open_memmap(self.folder / "data.csc.index.npy", mode="w+", dtype=np.float32,
                                         shape=(nnz,))
        indices = np.lib.format.open_memmap(self.folder / "indices.csc.index.npy", mode="w+", dtype=np.int32,
                                            shape=(nnz,))
        np.save(self.folder / "indptr.csc.index.npy", indptr)
        cursor = indptr[:-1].copy()  # next free slot of each term's column
        per_doc = np.frombuffer(self.doc_terms, dtype=np.int32).astype(np.int64) if n_docs else np.zeros(0, np.int64)
        ends = np.cumsum(per_doc)
        with self._scratch.open("rb") as fh:
            first_doc, done = 0, 0
            while done < nnz:
                last_doc = int(np.searchsorted(ends, done + BLOCK, side="right"))
                last_doc = max(last_doc, first_doc + 1)
                count = int(ends[last_doc - 1]) - done
                block = np.frombuffer(fh.read(count * 8), dtype=np.int32).reshape(-1, 2)
                term, tf = block[:, 0].astype(np.int64), block[:, 1].astype(np.float64)
                doc = np.repeat(np.arange(first_doc, last_doc, dtype=np.int64), per_doc[first_doc:last_doc])
                score = idf[term] * tf / (K1 * ((1 - B) + B * lens[doc] / avg) + tf)
                order = np.argsort(term, kind="stable")  # documents stay ascending within each term
                term_sorted = term[order]
                starts = np.flatnonzero(np.r_[True, term_sorted[1:] != term_sorted[:-1]])
                runs = np.diff(np.r_[starts, len(term_sorted)])
                rank = np.arange(len(term_sorted)) - np.repeat(starts, runs)
                where = cursor[term_sorted] + rank
                data[where] = score[order].astype(np.float32)
                indices[where] = doc[order].astype(np.int32)
                cursor[term_sorted[starts]] += runs
                first_doc, done = last_doc, done + count
                _release(data, indices)
        del data, indices
        self._scratch.unlink()
        (self.folder / "vocab.index.json").write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        (self.folder / "params.index.json").write_text(json.dumps(
            {"k1": K1, "b": B, "delta": DELTA, "method": "lucene", "idf_method": "lucene", "dtype": "float32",
             "int_dtype": "int32", "num_docs": n_docs, "backend": "numpy"}))
        return n_docs
