"""The local side index: a bm25s lexical index plus the paper catalogue.

Chroma is the source of truth. This index is a cache of it, kept in
``$RAG_HOME/lexical/<collection>/`` and stamped with the collection's *generation*:
built at ingest time, loaded once per process, and rebuilt from Chroma whenever its
stamp differs from the collection's (after an ingest by another process, an
interrupted ingest, or damaged files). It is never rebuilt per query.

It holds what retrieval needs besides vectors: BM25 over each chunk's embedded text
(title + sentences, English stop words removed, Snowball-stemmed), the chunk texts
for snippets, and the papers (abstracts rebuilt from their chunks). Left out: dense
retrieval and fusion (`rag.retrieval`).

`refresh_lexical` is the one way to get the index for a store: the saved one while its stamp
matches, else rebuilt from the store's chunks (ingest, removal and retrieval all call it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.chunking import paper_of
from rag.corpus import Paper

if TYPE_CHECKING:
    from rag.settings import Settings
    from rag.store import Store

log = logging.getLogger(__name__)

FORMAT = 1


def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: Sequence[str], stemmer: Any) -> list[list[str]]:
    """bm25s's tokenizer (lower-case words, English stop words out) then stemming."""
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)


@dataclass
class LexicalIndex:
    """BM25 over chunks, plus the chunk texts and the papers they came from."""

    generation: str
    chunk_ids: list[str]
    chunk_texts: list[str]
    papers: dict[str, Paper]
    bm25: Any = None
    _stemmer: Any = field(default=None, repr=False)
    _row: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._row = {cid: i for i, cid in enumerate(self.chunk_ids)}

    # ---------------------------------------------------------- building

    @classmethod
    def build(cls, rows: Iterable[tuple[str, str, dict[str, Any]]], generation: str,
              include_title: bool = True) -> LexicalIndex:
        """From Chroma rows (chunk id, text, metadata), as `Store.iter_chunks` yields them."""
        import bm25s

        chunk_ids, texts, embed_texts = [], [], []
        parts: dict[str, list[tuple[int, str]]] = {}
        records: dict[str, dict[str, Any]] = {}
        titles: dict[str, str] = {}
        for cid, text, meta in rows:
            pid = meta["paper_id"]
            chunk_ids.append(cid)
            texts.append(text)
            embed_texts.append(f"{meta.get('title', '')}. {text}" if include_title else text)
            parts.setdefault(pid, []).append((int(meta.get("chunk", 0)), text))
            titles[pid] = meta.get("title", "")
            if meta.get("paper"):
                records[pid] = json.loads(meta["paper"])
        papers = {}
        for pid, chunks in parts.items():
            record = records.get(pid, {"title": titles[pid]})
            record = {k: v for k, v in record.items() if k != "id"}
            record["abstract"] = " ".join(t for _, t in sorted(chunks))
            papers[pid] = Paper(**record)
            papers[pid].id = pid  # identity is the stored one, even for a record that would hash otherwise
        index = cls(generation, chunk_ids, texts, papers)
        if chunk_ids:
            index._stemmer = _stemmer()
            index.bm25 = bm25s.BM25()
            index.bm25.index(bm25s.tokenize(embed_texts, stopwords="en", stemmer=index._stemmer, show_progress=False),
                             show_progress=False)
        return index

    # ---------------------------------------------------------- persistence

    def save(self, folder: Path) -> None:
        """Write to a sibling folder, then swap it in: a crash leaves the old index or none."""
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self.bm25 is not None:
            self.bm25.save(str(tmp / "bm25"))
        with (tmp / "chunks.jsonl").open("w", encoding="utf-8") as fh:
            for cid, text in zip(self.chunk_ids, self.chunk_texts):
                fh.write(json.dumps([cid, text], ensure_ascii=False) + "\n")
        with (tmp / "papers.jsonl").open("w", encoding="utf-8") as fh:
            for paper in self.papers.values():
                fh.write(json.dumps(paper.to_dict(), ensure_ascii=False) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(
            {"format": FORMAT, "generation": self.generation, "chunks": len(self.chunk_ids),
             "papers": len(self.papers)}))
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex | None:
        """The saved index, or None when it is missing or damaged (the caller rebuilds it)."""
        import bm25s

        try:
            manifest = json.loads((folder / "manifest.json").read_text())
            if manifest.get("format") != FORMAT:
                return None
            rows = [json.loads(line) for line in (folder / "chunks.jsonl").read_text(encoding="utf-8").splitlines()]
            papers = {}
            for line in (folder / "papers.jsonl").read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                pid = record.pop("id")
                papers[pid] = Paper(**record)
                papers[pid].id = pid
            if len(rows) != manifest["chunks"] or len(papers) != manifest["papers"]:
                raise ValueError("row counts differ from the manifest")
            index = cls(manifest["generation"], [r[0] for r in rows], [r[1] for r in rows], papers)
            if rows:
                index.bm25 = bm25s.BM25.load(str(folder / "bm25"))
                index._stemmer = _stemmer()
                if index.bm25.scores["num_docs"] != len(rows):
                    raise ValueError("bm25 document count differs from the chunk list")
            return index
        except FileNotFoundError:
            return None
        except Exception as err:  # noqa: BLE001 - any damage means "rebuild from Chroma"
            log.warning("lexical index in %s is damaged (%s); rebuilding it from the vector store", folder, err)
            return None

    # ---------------------------------------------------------- queries

    def __len__(self) -> int:
        return len(self.chunk_ids)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._row

    def text(self, chunk_id: str) -> str:
        return self.chunk_texts[self._row[chunk_id]]

    def search(self, query: str, n: int, allowed: np.ndarray | None = None) -> list[tuple[str, float]]:
        """Best chunks as (chunk id, BM25 score), score > 0 only, best first.

        ``allowed`` is a boolean mask over chunks (filters); masked chunks never appear.
        """
        if self.bm25 is None or not query.strip():
            return []
        tokens = tokenize([query], self._stemmer)[0]
        if not tokens:
            return []
        scores = self.bm25.get_scores(tokens)
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        n = min(n, len(scores))
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.chunk_ids[i], float(scores[i])) for i in top if scores[i] > 0]

    def mask(self, paper_ids: set[str]) -> np.ndarray:
        """Boolean mask of the chunks that belong to ``paper_ids``."""
        return np.fromiter((paper_of(cid) in paper_ids for cid in self.chunk_ids), bool, len(self.chunk_ids))


def refresh_lexical(store: Store, settings: Settings, force: bool = False) -> LexicalIndex:
    """The saved lexical index if it matches the store's generation, else rebuilt and saved."""
    generation = store.generation()
    if not force:
        index = LexicalIndex.load(settings.lexical_dir)
        if index is not None and index.generation == generation:
            return index
    identity = store.identity()
    titled = identity is None or not identity.chunker.endswith("+notitle")
    index = LexicalIndex.build(store.iter_chunks(), generation, include_title=titled)
    try:
        index.save(settings.lexical_dir)
    except OSError as err:  # read-only home: keep the in-memory index, say why it is not saved
        log.warning("could not save the lexical index to %s: %s", settings.lexical_dir, err)
    return index
