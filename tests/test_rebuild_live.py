"""``rag ingest --rebuild`` while a server answers: readers keep answering from the old index.

The rebuild runs as a real ``rag ingest --rebuild`` process (as a user would start it beside a
running ``rag serve``); readers in this process search and answer in a loop the whole time and
a few seconds after. Before the build-aside-and-swap, the same loop saw "the index ... is
damaged", "internal error: NotFoundError" and "KeyError: 'title:...#0'" and empty results.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rag.answer.answerer import Answerer
from rag.errors import EmptyIndexError, IndexBusyError, RagError
from rag.index.embeddings import Embedder
from rag.index.index_health import check_local_index
from rag.index.loaders import load_paths
from rag.index.store import Store
from rag.ingest.ingestor import Ingestor, ingest_lock
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.conftest import BIN, BUNDLED

AFTER_S = 4.0  # readers go on this long after the rebuild ended (the issue saw errors up to 3 s after)


def write_corpus(path: Path, n: int) -> list[str]:
    """The first ``n`` bundled papers as JSON Lines; returns their titles."""
    papers = list(load_paths([BUNDLED]).papers.values())[:n]
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in papers), encoding="utf-8")
    return [p.title for p in papers]


@dataclass
class Tally:
    """What one reader saw."""

    attempted: int = 0
    empty: int = 0
    failures: list[str] = field(default_factory=list)  # "internal error" (any other exception) or a RagError

    def internal(self) -> list[str]:
        return [f for f in self.failures if f.startswith("internal")]


def read_until(stop: threading.Event, tally: Tally, ask: object, questions: list[str]) -> None:
    """Call ``ask(question)`` over ``questions`` in a loop until ``stop``; count what went wrong."""
    i = 0
    while not stop.is_set():
        question = questions[i % len(questions)]
        i += 1
        tally.attempted += 1
        try:
            if not ask(question):  # type: ignore[operator]
                tally.empty += 1
        except RagError as err:
            tally.failures.append(f"{type(err).__name__}: {err.user_message()}")
        except Exception as err:  # noqa: BLE001 - what the CLI and web chat print as "internal error"
            tally.failures.append(f"internal error: {type(err).__name__}: {err}")


@pytest.mark.timeout(300)
def test_readers_keep_answering_while_rebuild_runs(tmp_path: Path, rag_home: Path, embedder: Embedder) -> None:
    corpus = tmp_path / "papers.jsonl"
    titles = write_corpus(corpus, 40)
    settings = Settings()
    Ingestor(settings, embedder=embedder).run([corpus])
    before = Store(settings).generation()

    retriever = Retriever(settings, embedder=embedder)
    searcher = Retriever(settings, embedder=embedder)  # a second long-lived reader, as a second client
    answerer = Answerer(settings.model_copy(update={"llm": settings.llm.model_copy(update={"backend": "extractive"})}),
                        retriever=retriever, embedder=embedder)

    def answered(title: str) -> bool:
        answer = answerer.ask(f"What does “{title}” propose?")
        return bool(answer.citations or answer.also_retrieved)

    readers = {"search": (lambda q: searcher.search(q, k=3).hits, titles), "ask": (answered, titles)}
    tallies = {name: Tally() for name in readers}
    stop = threading.Event()
    threads = [threading.Thread(target=read_until, args=(stop, tallies[name], fn, qs), daemon=True)
               for name, (fn, qs) in readers.items()]
    for t in threads:
        t.start()
    try:
        rebuild = subprocess.run([str(BIN / "rag"), "ingest", "--rebuild", str(corpus)], capture_output=True,
                                 text=True, timeout=240)
        time.sleep(AFTER_S)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert rebuild.returncode == 0, rebuild.stderr
    report = {name: (t.attempted, len(t.failures), t.empty, len(t.internal())) for name, t in tallies.items()}
    print(f"\nreaders (attempted, failed, empty, internal errors) during the rebuild: {report}")
    for name, tally in tallies.items():
        assert tally.attempted >= 3, (name, report)
        assert not tally.failures, (name, tally.failures[:5])
        assert tally.empty == 0, (name, report)
    # the readers moved to the new index, and the old collection is gone
    assert retriever.index().generation == searcher.index().generation == Store(settings).generation() != before
    client = Store(settings).client
    assert [c.name for c in client.list_collections()] == [settings.store.collection]


def test_an_interrupted_swap_is_undone_by_the_next_ingest(tmp_path: Path, rag_home: Path,
                                                          embedder: Embedder) -> None:
    """Killed between the two renames: the old index is renamed back, the half-built one removed."""
    corpus = tmp_path / "papers.jsonl"
    titles = write_corpus(corpus, 3)
    settings = Settings()
    Ingestor(settings, embedder=embedder).run([corpus])
    store = Store(settings)
    aside = store.aside()
    aside.collection(create=True)
    store.collection().modify(name=f"{store.name}-old-deadbeef0000")  # the first rename, then "kill -9"

    reader = Retriever(Settings(), embedder=embedder)
    with pytest.raises(EmptyIndexError):  # waits SWAP_WAIT_S for the second rename, then says so
        reader.search(titles[0])
    summary = Ingestor(settings, embedder=embedder).run([corpus])
    assert summary.unchanged == 3 and summary.chunks_embedded == 0  # the old index came back whole
    assert [c.name for c in Store(settings).client.list_collections()] == [settings.store.collection]
    assert reader.search(titles[0]).hits[0].paper.title == titles[0]


@pytest.mark.heavy
def test_a_problem_seen_while_an_ingest_writes_is_busy_not_damaged(rag_home: Path) -> None:
    """An ingest holding the lock is about to replace the files: "try again", not "run --rebuild"."""
    settings = Settings()
    settings.chroma_dir.mkdir(parents=True)
    (settings.chroma_dir / "chroma.sqlite3").write_bytes(b"")  # what a reader may see mid-write
    done = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with ingest_lock(settings):
            held.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        with pytest.raises(IndexBusyError) as info:
            check_local_index(settings)
        assert "damaged" not in info.value.user_message() and "--rebuild" not in info.value.user_message()
    finally:
        done.set()
        holder.join()
    with pytest.raises(RagError, match="damaged"):  # nobody writing: it is damage
        check_local_index(settings)


def test_rebuild_swaps_on_a_chroma_server_too(tmp_path: Path, rag_home: Path, embedder: Embedder,
                                              chroma_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Renames and the generation in the collection metadata: a reader of the same server moves over."""
    monkeypatch.setattr("rag.index.store.RETIRE_AFTER_S", 0.0)
    corpus = tmp_path / "papers.jsonl"
    titles = write_corpus(corpus, 4)
    settings = Settings(store={"chroma_url": chroma_server})
    Ingestor(settings, embedder=embedder).run([corpus])
    reader = Retriever(settings, embedder=embedder, refresh_interval_s=0.0)
    before = reader.index().generation
    assert reader.search(titles[0]).hits[0].paper.title == titles[0]

    summary = Ingestor(settings, embedder=embedder).run([corpus], rebuild=True)
    assert summary.new == 4 and summary.papers_total == 4
    names = [c.name for c in Store(settings).client.list_collections()]
    assert names == [settings.store.collection]  # the old collection retired, no leftovers
    assert reader.search(titles[1]).hits[0].paper.title == titles[1]  # its old handle is gone: reopened
    assert reader.index().generation == Store(settings).generation() != before
