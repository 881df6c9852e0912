"""The objects the web app and the API share between threads guard themselves.

`Embedder.encode` lets one thread at a time into the model; a fresh `Retriever` hit by many
threads loads its lexical index once and hands every thread the same one; retrievers of one data
home reopening at once take turns with Chroma's process-wide client cache. Each test starts its
threads at a barrier, so without the lock the calls overlap and the test fails; lexical indexes rebuilt
at once by several readers each build in their own scratch folder.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.index.embeddings import Embedder
from rag.settings import EmbeddingSettings, Settings

THREADS = 8


def run_together(work: Callable[[int], Any]) -> list[Any]:
    """``work(i)`` on THREADS threads released at once; their results in order (errors re-raised)."""
    start = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS
    errors: list[BaseException] = []

    def target(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            errors.append(err)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    return results


class ProbeModel:
    """A sentence-transformers stand-in that records how many threads are inside ``encode`` at once."""

    def __init__(self) -> None:
        self.inside = self.most_inside = 0
        self._count = threading.Lock()

    def get_embedding_dimension(self) -> int:
        return 4

    def encode(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        with self._count:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        time.sleep(0.02)  # long enough for an unguarded second thread to come in
        with self._count:
            self.inside -= 1
        return np.array([vector(t) for t in texts], dtype=np.float32)


def vector(text: str) -> list[float]:
    seed = zlib.crc32(text.encode())
    return [float((seed >> shift) & 0xFF) for shift in (0, 8, 16, 24)]


def test_threads_sharing_an_embedder_enter_the_model_one_at_a_time() -> None:
    embedder = Embedder(EmbeddingSettings(onnx_queries=False))  # the model is never loaded: the probe stands in
    embedder.model = probe = ProbeModel()

    results = run_together(lambda i: embedder.encode([f"thread {i} text {j}" for j in range(3)]))

    assert probe.most_inside == 1
    for i, vectors in enumerate(results):  # and each thread got its own texts' vectors back
        assert vectors.tolist() == [vector(f"thread {i} text {j}") for j in range(3)]
    assert embedder.encoded == 3 * THREADS


def test_threads_opening_a_retriever_load_its_lexical_index_once(bundled_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from rag.search.retrieval import Retriever

    retriever = Retriever(Settings(home=bundled_copy), embedder=embedder)

    indexes = run_together(lambda _: retriever.index())

    assert len({id(index) for index in indexes}) == 1
    assert len(indexes[0].papers) == 184
    assert retriever.refresh() is indexes[0]  # nothing new was written: the same index, checked now



def test_retrievers_of_one_home_reopening_at_once_take_turns(bundled_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    """Chroma caches one system per data home for the whole process; a retriever that reopens clears it
    and makes a new client. Several doing so at once (readers after a rebuild) must not find it missing."""
    from rag.search.retrieval import Retriever

    settings = Settings(home=bundled_copy)
    readers = [Retriever(settings, embedder=embedder) for _ in range(THREADS)]
    for reader in readers:
        reader.index()

    def reopen_and_read(i: int) -> int:
        for _ in range(3):
            readers[i].reopen()
            count = len(readers[i].index().papers)
        return count

    assert run_together(reopen_and_read) == [184] * THREADS


def test_lexical_rebuilds_at_once_each_get_a_whole_index(bundled_copy: Path) -> None:
    """Readers that find the lexical cache stale rebuild it; several at once (two readers after an
    ingest elsewhere) once shared one scratch folder and deleted each other's half-built index."""
    from rag.index.lexical import refresh_lexical
    from rag.index.store import Store

    settings = Settings(home=bundled_copy)
    abandoned = settings.lexical_dir.with_name(f"{settings.lexical_dir.name}.tmp-999999999-1-dead")
    abandoned.mkdir(parents=True)  # a builder that died: its pid is gone

    store = Store(settings)  # one client, as one reader process holds (Chroma's client set-up is not the subject)
    store.generation()

    indexes = run_together(lambda _: refresh_lexical(store, settings, force=True))

    assert [len(index.papers) for index in indexes] == [184] * THREADS
    assert refresh_lexical(store, settings).generation == indexes[0].generation
    lock = settings.lexical_dir.with_name(settings.lexical_dir.name + ".lock")  # builders take turns on it
    leftovers = [p.name for p in settings.lexical_dir.parent.iterdir() if p not in (settings.lexical_dir, lock)]
    assert leftovers == [], leftovers  # no scratch or set-aside copy, the dead builder's included
