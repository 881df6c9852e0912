"""Ingest: idempotence, exact replacement of changed chunks, embedder checks, locks,
a real Chroma server, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rag.errors import EmbedderMismatchError, InputError, LockedError
from rag.index.embeddings import Embedder
from rag.index.loaders import load_paths, write_jsonl
from rag.index.store import Store
from rag.ingest.ingestor import Ingestor, ingest_lock, stats
from rag.settings import Settings

from .conftest import BUNDLED, FIXTURES, run_cli


def small_corpus(tmp_path: Path, n: int = 12) -> Path:
    papers = list(load_paths([BUNDLED]).papers.values())[:n]
    path = tmp_path / "small.jsonl"
    write_jsonl(papers, path)
    return path


def stored_chunks(settings: Settings) -> dict[str, str]:
    return {cid: meta["hash"] for cid, _, meta in Store(settings).iter_chunks()}


def test_ingest_twice_embeds_nothing_the_second_time(tmp_path: Path, embedder: Embedder) -> None:
    corpus, settings = small_corpus(tmp_path), Settings()
    first = Ingestor(settings, embedder=embedder).run([corpus])
    assert (first.new, first.unchanged) == (12, 0) and first.chunks_embedded == first.chunks_total > 12
    before = embedder.encoded
    second = Ingestor(settings, embedder=embedder).run([corpus])
    assert (second.new, second.updated, second.unchanged) == (0, 0, 12)
    assert second.chunks_embedded == 0 and embedder.encoded == before
    assert Store(settings).count() == first.chunks_total


def test_editing_one_abstract_replaces_exactly_its_chunks(tmp_path: Path, embedder: Embedder) -> None:
    corpus, settings = small_corpus(tmp_path), Settings()
    Ingestor(settings, embedder=embedder).run([corpus])
    before = stored_chunks(settings)
    records = [json.loads(line) for line in corpus.read_text().splitlines()]
    target = max(records, key=lambda r: len(r["abstract"]))  # a paper with several chunks
    target["abstract"] = "A much shorter abstract about sparse retrieval."  # fewer chunks than before
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    pid = load_paths([corpus]).papers
    target_id = next(k for k, p in pid.items() if p.title == target["title"])

    summary = Ingestor(settings, embedder=embedder).run([corpus])
    after = stored_chunks(settings)
    assert (summary.updated, summary.unchanged, summary.chunks_embedded) == (1, 11, 1)
    old_ids = {c for c in before if c.startswith(target_id + "#")}
    assert summary.chunks_deleted == len(old_ids) - 1 >= 1
    assert {c for c in after if c.startswith(target_id + "#")} == {target_id + "#0"}  # no orphans
    assert {c: h for c, h in after.items() if not c.startswith(target_id)} == \
           {c: h for c, h in before.items() if not c.startswith(target_id)}
    # the lexical index followed the change
    from rag.index.lexical import LexicalIndex

    index = LexicalIndex.load(settings.lexical_dir)
    assert index is not None and index.papers[target_id].abstract == target["abstract"]
    assert len(index) == len(after)


def test_metadata_change_updates_without_reembedding(tmp_path: Path, embedder: Embedder) -> None:
    corpus, settings = small_corpus(tmp_path, 3), Settings()
    Ingestor(settings, embedder=embedder).run([corpus])
    records = [json.loads(line) for line in corpus.read_text().splitlines()]
    records[0]["authors"] = ["New Author"]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = Ingestor(settings, embedder=embedder).run([corpus])
    assert (summary.updated, summary.chunks_embedded) == (1, 0)
    from rag.index.lexical import LexicalIndex

    index = LexicalIndex.load(settings.lexical_dir)
    assert index is not None
    assert any(p.authors == ["New Author"] for p in index.papers.values())


@pytest.fixture(scope="module")
def narrow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, different sentence-transformers model: MiniLM + a Dense layer down to 32 dims."""
    from sentence_transformers import SentenceTransformer, models

    base = Embedder().model
    dense = models.Dense(base.get_embedding_dimension() if hasattr(base, "get_embedding_dimension")
                         else base.get_sentence_embedding_dimension(), 32)
    model = SentenceTransformer(modules=[*base, dense], device="cpu")
    path = tmp_path_factory.mktemp("models") / "minilm-32d"
    model.save(str(path))
    return path


def test_switching_embedder_is_a_clear_error_then_rebuild_works(tmp_path: Path, embedder: Embedder,
                                                               narrow_model: Path) -> None:
    corpus = small_corpus(tmp_path, 4)
    Ingestor(Settings(), embedder=embedder).run([corpus])
    other = Settings(embedding={"model": str(narrow_model)})
    with pytest.raises(EmbedderMismatchError) as info:
        Ingestor(other).run([corpus])
    assert "rag ingest --rebuild" in info.value.fix and "minilm-32d" in str(info.value)
    summary = Ingestor(other).run([corpus], rebuild=True)
    assert summary.new == 4
    assert stats(other)["dim"] == 32 and stats(other)["embedder"] == "minilm-32d"


def test_strict_rejects_everything_before_writing() -> None:
    settings = Settings()
    with pytest.raises(InputError, match="--strict"):
        Ingestor(settings).run([FIXTURES / "mixed.jsonl"], strict=True)
    assert not Store(settings).exists()


def test_a_second_ingest_names_the_lock_holder() -> None:
    settings = Settings(store={"lock_timeout_s": 0.2})
    with ingest_lock(settings), pytest.raises(LockedError, match=r"pid \d+"):
        Ingestor(settings).run([FIXTURES / "zotero.bib"])


@pytest.mark.slow
def test_same_ingest_against_a_real_chroma_server(tmp_path: Path, embedder: Embedder, chroma_server: str) -> None:
    corpus, settings = small_corpus(tmp_path, 6), Settings(store={"chroma_url": chroma_server})
    first = Ingestor(settings, embedder=embedder).run([corpus])
    second = Ingestor(settings, embedder=embedder).run([corpus])
    assert first.new == 6 and second.unchanged == 6 and second.chunks_embedded == 0
    assert not settings.chroma_dir.exists()  # nothing embedded locally
    data = stats(settings)
    assert data["papers"] == 6 and data["chunks"] == first.chunks_total and data["store"] == chroma_server


@pytest.mark.heavy
def test_cli_ingest_and_stats(tmp_path: Path) -> None:
    bib = tmp_path / "refs.bib"
    shutil.copy(FIXTURES / "zotero.bib", bib)
    result = run_cli("ingest", str(bib), str(FIXTURES / "arxiv_array.json"))
    assert result.returncode == 1, result.stderr  # some records rejected, the rest ingested
    assert "4 new" in result.stdout and "3 rejected" in result.stdout
    assert "refs.bib:20" in result.stderr and "Traceback" not in result.stderr
    again = run_cli("ingest", "--json", str(bib), str(FIXTURES / "arxiv_array.json"))
    summary = json.loads(again.stdout)
    assert summary["unchanged"] == 4 and summary["chunks_embedded"] == 0
    data = json.loads(run_cli("stats", "--json").stdout)
    assert data["papers"] == 4 and data["chunks"] >= 4


@pytest.mark.parametrize("args, message", [
    (["missing.jsonl"], "no such file"),
    ([str(FIXTURES / "latin1.csv")], "not UTF-8"),
])
def test_cli_bad_paths_are_one_clear_line(args: list[str], message: str) -> None:
    result = run_cli("ingest", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_streamed_ingest_equals_one_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 7 papers: duplicates across batches are merged (later record wins, counted once),
    the index equals a one-batch ingest's, and re-ingesting embeds nothing. No model: hash vectors."""
    import rag.ingest.ingestor
    from rag.index.lexical import LexicalIndex
    from rag.testing import HashEmbedder

    records = [json.loads(line) for line in BUNDLED.read_text(encoding="utf-8").splitlines()[:30]]
    later = {**records[2], "abstract": records[2]["abstract"] + " A sentence added later."}
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in [*records, later]), encoding="utf-8")

    def ingest(home: str, batch: int) -> tuple[dict[str, object], Settings]:
        monkeypatch.setattr(rag.ingest.ingestor, "INGEST_BATCH", batch)
        settings = Settings(home=tmp_path / home)
        return Ingestor(settings, embedder=HashEmbedder(settings.embedding)).run([corpus]).as_dict(), settings

    streamed, settings = ingest("streamed", 7)
    whole, whole_settings = ingest("whole", 1000)
    for key in ("new", "merged", "papers_total", "chunks_total"):
        assert streamed[key] == whole[key], key
    assert (streamed["new"], streamed["merged"], streamed["papers_total"]) == (30, 1, 30)
    assert stored_chunks(settings) == stored_chunks(whole_settings)
    index = LexicalIndex.load(settings.lexical_dir)
    assert index is not None and len(index.papers) == 30
    paper = next(p for p in index.papers.values() if p.title == later["title"])
    assert paper.abstract.endswith("A sentence added later.")  # the later record won
    again, _ = ingest("streamed", 7)
    assert (again["chunks_embedded"], again["unchanged"], again["new"]) == (0, 30, 0)


def test_an_index_written_before_text_was_stored_once_is_read_and_upgraded(tmp_path: Path) -> None:
    """Chroma documents, a title on every chunk and a record without its abstract (the format
    before): the lexical index reads them as they are; the next ingest rewrites the metadata
    only (nothing embedded) and afterwards the same papers read the same."""
    from rag.index.chunking import Chunker
    from rag.index.lexical import refresh_lexical
    from rag.index.store import IndexIdentity
    from rag.testing import HashEmbedder

    settings = Settings(home=tmp_path / "home")
    emb = HashEmbedder(settings.embedding)
    corpus = small_corpus(tmp_path, 5)
    papers = list(load_paths([corpus]).papers.values())
    chunks = Chunker(emb, settings.chunking.max_tokens).chunk(papers)
    by_id = {p.id: p for p in papers}
    store = Store(settings)
    store.begin_write(IndexIdentity(emb.name, settings.chunking.version, emb.dim))
    old_meta = []
    for c in chunks:
        paper = by_id[c.paper_id]
        meta = {"paper_id": c.paper_id, "chunk": c.index, "hash": c.hash, "title": paper.title,
                "n_chunks": sum(1 for x in chunks if x.paper_id == c.paper_id)}
        if c.index == 0:
            meta["paper"] = json.dumps({k: v for k, v in paper.to_dict().items()
                                        if k != "abstract" and v not in (None, [], {})}, sort_keys=True)
        old_meta.append(meta)
    vectors = emb.encode([c.embed_text for c in chunks])
    store.collection(create=True).upsert(ids=[c.id for c in chunks], embeddings=vectors,
                                         documents=[c.text for c in chunks], metadatas=old_meta)
    store.end_write()

    before = refresh_lexical(store, settings)
    assert {pid: p.abstract for pid, p in before.papers.items()} == {p.id: p.abstract for p in papers}
    assert before.text(chunks[1].id) == chunks[1].text
    summary = Ingestor(settings, embedder=emb).run([corpus])
    assert (summary.chunks_embedded, summary.metadata_only, summary.new) == (0, 5, 0)
    after = refresh_lexical(Store(settings), settings)
    read_before = {pid: p.to_dict() for pid, p in before.papers.items()}
    assert {pid: p.to_dict() for pid, p in after.papers.items()} == read_before
    assert [after.text(c.id) for c in chunks] == [c.text for c in chunks]
