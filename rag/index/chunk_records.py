"""What Chroma keeps of a chunk besides its vector: its place in the abstract, and on chunk 0
the paper record.

Chunk 0 of each paper holds the paper record as JSON (its abstract being its chunks' texts
joined), zlib-compressed and base85-encoded in pieces (`pack_record`); every chunk holds its
``start`` and ``length`` in that abstract (`chunk_metadata`), and no Chroma document (indexes
written before that have them, and are read as they are). Left out: the Chroma calls that
write and read these (`rag.index.store`) and chunking itself (`rag.index.chunking`).
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from rag.index.chunking import Chunk
from rag.index.corpus import Paper

PIECE = 900  # characters per metadata string (see `pack_record`)


def paper_metadata(paper: Paper, abstract: str | None = None) -> str:
    """The paper record as JSON for chunk 0, its abstract being its chunks' texts joined
    (``abstract``; default the paper's own)."""
    record = {k: v for k, v in paper.to_dict().items() if k != "abstract" and v not in (None, [], {})}
    record["abstract"] = paper.abstract if abstract is None else abstract
    return json.dumps(record, ensure_ascii=False, sort_keys=True)


def pack_record(record: str) -> dict[str, str]:
    """A paper record (JSON) as chunk-0 metadata: zlib-compressed, base85, in pieces of at most
    `PIECE` characters under ``paper``, ``paper_1``, ... (the first says how many).

    Chroma's embedded SQLite indexes every metadata string; an index entry past ~1,000 bytes
    spills onto a 4 KB overflow page of its own, so one 1.6 KB record costs ~5 KB of index.

    >>> meta = pack_record('{"title": "T"}')
    >>> meta["paper"][:5], unpack_record(meta)
    ('z1:1:', '{"title": "T"}')
    """
    packed = base64.b85encode(zlib.compress(record.encode("utf-8"), 9)).decode("ascii")
    pieces = [packed[i:i + PIECE] for i in range(0, len(packed), PIECE)] or [""]
    return {"paper": f"z1:{len(pieces)}:{pieces[0]}", **{f"paper_{i}": p for i, p in enumerate(pieces[1:], 1)}}


def unpack_record(meta: dict[str, Any]) -> str | None:
    """The paper record JSON `pack_record` stored in ``meta`` (plain JSON from indexes written before; None: none)."""
    head = meta.get("paper")
    if not head:
        return None
    if not head.startswith("z1:"):
        return str(head)
    count, first = head[3:].split(":", 1)
    packed = first + "".join(str(meta[f"paper_{i}"]) for i in range(1, int(count)))
    return zlib.decompress(base64.b85decode(packed)).decode("utf-8")


def chunk_metadata(chunk: Chunk, paper: Paper, n_chunks: int, start: int = 0,
                   abstract: str | None = None) -> dict[str, Any]:
    """What Chroma keeps of a chunk besides its vector. Its text is stored once, in the paper
    record on chunk 0 (`pack_record`): each chunk has its ``start`` and ``length`` in that
    abstract (no Chroma document: Chroma would keep it again in its metadata index and in its
    full-text index, which cannot be turned off in embedded Chroma: ~60% of the disk)."""
    meta: dict[str, Any] = {"paper_id": chunk.paper_id, "chunk": chunk.index, "n_chunks": n_chunks,
                            "hash": chunk.hash, "start": start, "length": len(chunk.text)}
    if chunk.index == 0:
        meta.update(pack_record(paper_metadata(paper, abstract)))
    return meta


def chunk_metadatas(chunks: Sequence[Chunk], paper: Paper) -> list[dict[str, Any]]:
    """`chunk_metadata` for all of one paper's chunks, in order (their texts joined are its abstract)."""
    abstract = " ".join(c.text for c in chunks)
    starts = np.cumsum([0] + [len(c.text) + 1 for c in chunks[:-1]])
    return [chunk_metadata(c, paper, len(chunks), int(s), abstract) for c, s in zip(chunks, starts)]
