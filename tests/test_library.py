"""Similar papers and library management (`rag.library`) through every interface: the ``rag`` CLI as
a user runs it, a running ``rag api`` (the reader that must notice a removal), the web chat's
handlers, and ``rag serve`` answering the chat page and the API on one port (driven with
``gradio_client`` and ``httpx``).

Similar papers are checked against a brute-force reference over the stored vectors; a removal
against every place a paper can still show up: Chroma, the lexical index on disk, search, an
extractive answer, similar papers, and a server that was started before the removal.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rag.answer.answerer import Answerer
from rag.errors import PaperNotFoundError
from rag.index.lexical import LexicalIndex
from rag.index.store import Store
from rag.library import catalogue, remove_papers, similar_papers
from rag.search.filters import Filters
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.conftest import BIN, free_port, run_cli, running_server
from tests.test_api import SKYWORK_ID, SKYWORK_Q, TOKEN, server_env, start_api
from ui.app import WebApp


def reference_similar(settings: Settings, paper_id: str, k: int) -> list[str]:
    """Brute force: the mean of the paper's chunk vectors against every other chunk, best chunk per paper."""
    got = Store(settings).collection().get(include=["embeddings", "metadatas"])
    vectors = np.asarray(got["embeddings"], dtype=np.float32)
    owners = [m["paper_id"] for m in got["metadatas"]]
    mine = vectors[[i for i, pid in enumerate(owners) if pid == paper_id]].mean(axis=0)
    scores = vectors @ (mine / np.linalg.norm(mine))
    best: dict[str, float] = {}
    for pid, score in zip(owners, scores):
        if pid != paper_id:
            best[pid] = max(best.get(pid, -1.0), float(score))
    return sorted(best, key=lambda p: -best[p])[:k]


# ------------------------------------------------------------------ similar papers


def test_similar_papers_match_a_brute_force_reference(bundled_home: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(home=bundled_home)
    retriever = Retriever(settings, embedder=embedder)
    result = similar_papers(retriever, SKYWORK_ID, k=5)
    ids = [h.paper.id for h in result.hits]
    assert ids == reference_similar(settings, SKYWORK_ID, 5)
    assert SKYWORK_ID not in ids and len(set(ids)) == 5
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert all(h.dense == h.score and h.lexical is None and h.chunks for h in result.hits)

    only = frozenset(ids[2:4] + [SKYWORK_ID])  # a filter narrows the candidates inside Chroma's query
    narrowed = similar_papers(retriever, SKYWORK_ID, k=5, filters=Filters(paper_ids=only))
    assert [h.paper.id for h in narrowed.hits] == ids[2:4]
    empty = similar_papers(retriever, SKYWORK_ID, k=5, filters=Filters(year_from=1990, year_to=1990))
    assert empty.hits == [] and "year" in (empty.empty_because or "")
    with pytest.raises(PaperNotFoundError, match="no paper with id 'nope'"):
        similar_papers(retriever, "nope")


def test_cli_similar_list_and_show(bundled_home: Path) -> None:
    env = {"RAG_HOME": str(bundled_home)}
    near = run_cli("similar", SKYWORK_ID, "-k", "3", "--json", env=env)
    assert near.returncode == 0, near.stderr
    hits = json.loads(near.stdout)
    assert [h["paper_id"] for h in hits] == reference_similar(Settings(home=bundled_home), SKYWORK_ID, 3)
    assert set(hits[0]) >= {"paper_id", "title", "score", "dense", "snippet", "links"}
    text = run_cli("similar", SKYWORK_ID, "-k", "2", env=env)
    assert text.returncode == 0 and text.stdout.startswith("papers similar to Skywork-MoE") and hits[0]["title"] \
        in text.stdout
    assert json.loads(run_cli("similar", SKYWORK_ID, "--year", "1990", "--json", env=env).stdout) == []

    listed = run_cli("papers", "list", "--json", env=env)
    papers = json.loads(listed.stdout)
    assert len(papers) == 184 and all(p["chunks"] >= 1 and "abstract" not in p for p in papers)
    assert sum(p["chunks"] for p in papers) == len(catalogue(Settings(home=bundled_home)))
    lines = run_cli("papers", "list", env=env)
    assert len(lines.stdout.splitlines()) == 184 and "184 of 184 papers" in lines.stderr
    assert any(line.startswith(SKYWORK_ID + "\t") for line in lines.stdout.splitlines())
    assert json.loads(run_cli("papers", "list", "--year", "2024", "--json", env=env).stdout) == []

    shown = json.loads(run_cli("papers", "show", SKYWORK_ID, "--json", env=env).stdout)
    assert shown["paper_id"] == SKYWORK_ID and "146 billion" in shown["abstract"] and shown["chunks"] == 1
    plain = run_cli("papers", "show", SKYWORK_ID, env=env)
    assert plain.stdout.startswith("Skywork-MoE") and "146 billion" in plain.stdout

    for args in (("similar", "nope"), ("papers", "show", "nope"), ("similar", SKYWORK_ID, "-k", "0")):
        bad = run_cli(*args, env=env)
        assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr, args
        assert bad.stderr.startswith("error: ") or "Usage" in bad.stderr, bad.stderr


# ------------------------------------------------------------------ removing papers


def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the running server did not notice the removal"
        time.sleep(0.2)


def test_rm_is_seen_everywhere_and_by_a_reader_already_running(bundled_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(home=bundled_copy, llm={"backend": "extractive"})
    neighbour = next(p for p in reference_similar(settings, SKYWORK_ID, 20)  # Skywork-MoE is among its nearest
                     if SKYWORK_ID in reference_similar(settings, p, 10))
    url, server = start_api(bundled_copy)
    with server:
        assert httpx.get(f"{url}/v1/papers/{SKYWORK_ID}").status_code == 200
        before = httpx.post(f"{url}/v1/search", json={"query": "Skywork-MoE", "k": 3}).json()["results"]
        assert before[0]["paper_id"] == SKYWORK_ID

        removed = run_cli("papers", "rm", SKYWORK_ID, env={"RAG_HOME": str(bundled_copy)})
        assert removed.returncode == 0, removed.stderr
        assert removed.stdout.splitlines() == [f"removed {SKYWORK_ID}  Skywork-MoE: A Deep Dive into Training "
                                               "Techniques for Mixture-of-Experts Language Models",
                                               "1 chunks deleted; 183 papers left"]

        # the server started before the removal notices it (the generation changed)
        wait_until(lambda: httpx.get(f"{url}/v1/papers/{SKYWORK_ID}").status_code == 404)
        found = httpx.post(f"{url}/v1/search", json={"query": "Skywork-MoE", "k": 10}).json()["results"]
        assert SKYWORK_ID not in [h["paper_id"] for h in found]
        near = httpx.get(f"{url}/v1/papers/{neighbour}/similar", params={"k": 10}).json()["results"]
        assert len(near) == 10 and SKYWORK_ID not in [h["paper_id"] for h in near]
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": "extractive", "messages": [{"role": "user", "content": SKYWORK_Q}]}).json()
        cited = [c["paper_id"] for c in reply["citations"]] + [c["paper_id"] for c in
                                                               reply["paper_rag"]["also_retrieved"]]
        assert SKYWORK_ID not in cited and "146 billion" not in reply["choices"][0]["message"]["content"]

    # a fresh process agrees: Chroma, the lexical index on disk, search, an answer, similar papers
    store = Store(settings)
    assert store.collection().get(where={"paper_id": SKYWORK_ID})["ids"] == []
    lexical = LexicalIndex.load(settings.lexical_dir)
    assert lexical is not None and lexical.generation == store.generation()
    assert SKYWORK_ID not in lexical.papers and not any(c.startswith(SKYWORK_ID) for c in lexical.chunk_ids)
    assert len(lexical.papers) == 183
    retriever = Retriever(settings, embedder=embedder)
    assert SKYWORK_ID not in [h.paper.id for h in retriever.search("Skywork-MoE", k=10).hits]
    answer = Answerer(settings, retriever=retriever, embedder=embedder).ask(SKYWORK_Q)
    assert SKYWORK_ID not in [c.paper.id for c in answer.citations + answer.also_retrieved]
    assert SKYWORK_ID not in [h.paper.id for h in similar_papers(retriever, neighbour, k=10).hits]
    searched = run_cli("search", "Skywork-MoE", "--json", env={"RAG_HOME": str(bundled_copy)})
    assert SKYWORK_ID not in searched.stdout

    # a second rm: not there, one line and its fix, exit 2; a mixed list removes nothing
    again = run_cli("papers", "rm", SKYWORK_ID, env={"RAG_HOME": str(bundled_copy)})
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.splitlines()[0] == f"error: not in the index: {SKYWORK_ID} (nothing removed)"
    assert again.stderr.splitlines()[1].startswith("  fix: ") and len(again.stderr.splitlines()) == 2
    generation = store.generation()
    with pytest.raises(PaperNotFoundError, match="nothing removed"):
        remove_papers(settings, [neighbour, SKYWORK_ID])
    assert store.generation() == generation and neighbour in catalogue(settings).papers


# ------------------------------------------------------------------ the web chat


def test_web_cards_fold_out_similar_papers_and_the_corpus_panel_removes(bundled_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    app = WebApp(Settings(home=bundled_copy, llm={"backend": "extractive"}), embedder=embedder)
    session = list(app.ask(SKYWORK_Q))[-1][-1]
    html = session.messages[-1]["content"]
    assert 'class="rag-similar"' in html and "Similar papers (3)" in html and f"<code>{SKYWORK_ID}</code>" in html
    first_similar = reference_similar(app.settings, SKYWORK_ID, 1)[0]
    assert f"<code>{first_similar}</code>" in html

    report, counts, *_, box = app.remove(f" {SKYWORK_ID}, ")
    assert report.startswith(f"removed {SKYWORK_ID}") and "183 papers left" in report
    assert "183 papers" in counts and box == ""
    assert SKYWORK_ID not in app.pool.retriever.index().papers
    again, *_ = app.remove(SKYWORK_ID)
    assert again.startswith("error: not in the index") and "fix:" in again
    empty, *_ = app.remove("  ")
    assert "Type the id" in empty


# ------------------------------------------------------------------ rag serve: one port


def test_serve_answers_the_chat_and_the_api_on_one_port(bundled_copy: Path) -> None:
    from gradio_client import Client

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "rag"), "serve", "--port", str(port)]
    with running_server(cmd, url + "/health", timeout=300, env=server_env(bundled_copy, RAG_API__TOKEN=TOKEN)):
        page = httpx.get(url + "/")
        assert page.status_code == 200 and "gradio" in page.text.lower()
        assert httpx.get(url + "/v1/models").status_code == 401  # the API keeps its token
        auth = {"Authorization": f"Bearer {TOKEN}"}
        models = httpx.get(url + "/v1/models", headers=auth).json()
        assert {"paper-rag", "extractive"} <= {m["id"] for m in models["data"]}
        assert httpx.get(f"{url}/v1/papers/{SKYWORK_ID}", headers=auth).status_code == 200

        chat = Client(url + "/", verbose=False)
        report = chat.predict(SKYWORK_ID, api_name="/remove_papers")[0]
        assert report.startswith(f"removed {SKYWORK_ID}")
        wait_until(lambda: httpx.get(f"{url}/v1/papers/{SKYWORK_ID}", headers=auth).status_code == 404)


# ------------------------------------------------------------------ naming a paper


NAMED = [{"title": "Zephyr Graphs for Retrieval", "abstract": "Zephyr graphs index abstracts for retrieval.",
          "arxiv_id": "2406.06563", "doi": "10.1234/zephyr", "year": 2024},
         {"title": "Quokka Counting on Islands", "abstract": "Quokka populations were counted on an island.",
          "doi": "10.1234/quokka", "year": 2019},
         {"title": "Twin Title", "abstract": "The first of two papers that share a title.", "doi": "10.1234/twin-a"},
         {"title": "Twin Title", "abstract": "The second of two papers that share a title.", "doi": "10.1234/twin-b"},
         {"title": "Undated Notes on Sparse Attention", "abstract": "Sparse attention without a year."}]


@pytest.fixture
def named_home(rag_home: Path, embedder, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    from rag.ingest.ingestor import Ingestor

    path = tmp_path / "named.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in NAMED), encoding="utf-8")
    Ingestor(Settings(home=rag_home), embedder=embedder).run([path])
    return rag_home


def test_a_paper_is_named_by_id_exact_title_arxiv_id_or_doi(named_home: Path) -> None:
    from fastapi.testclient import TestClient

    from rag.errors import InputError
    from rag.library import resolve_paper
    from ui.api import create_app

    papers = catalogue(Settings(home=named_home)).papers
    for given in ("arxiv:2406.06563", "2406.06563", "arXiv:2406.06563v2", "https://arxiv.org/abs/2406.06563",
                  "10.1234/zephyr", "https://doi.org/10.1234/ZEPHYR", "zephyr graphs for retrieval",
                  "  Zephyr  Graphs for Retrieval. "):
        assert resolve_paper(papers, given).id == "arxiv:2406.06563", given
    assert resolve_paper(papers, "Quokka counting on islands").id == "doi:10.1234/quokka"
    with pytest.raises(InputError, match="2 papers are titled 'Twin Title'"):
        resolve_paper(papers, "Twin Title")
    with pytest.raises(PaperNotFoundError, match="no paper with id 'Zephyr'"):
        resolve_paper(papers, "Zephyr")  # a title is matched whole, never in part

    env = {"RAG_HOME": str(named_home)}
    shown = run_cli("papers", "show", "Quokka Counting on Islands", "--json", env=env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["paper_id"] == "doi:10.1234/quokka", shown.stderr
    near = run_cli("similar", "2406.06563", "--json", env=env)
    assert near.returncode == 0 and "arxiv:2406.06563" not in near.stdout and json.loads(near.stdout), near.stderr
    with TestClient(create_app(Settings(home=named_home, llm={"backend": "extractive"}))) as api:
        assert api.get("/v1/papers/2406.06563").json()["id"] == "arxiv:2406.06563"
        assert "Quokka" in api.get("/v1/papers/Quokka Counting on Islands/bibtex").text
        assert api.get("/v1/papers/10.1234/quokka/similar", params={"k": 2}).json()["paper_id"] == "doi:10.1234/quokka"
        twin = api.get("/v1/papers/Twin Title")
        assert twin.status_code == 400 and "doi:10.1234/twin-a" in twin.json()["error"]["message"]
    removed = run_cli("papers", "rm", "https://doi.org/10.1234/quokka", env=env)
    assert removed.returncode == 0 and "removed doi:10.1234/quokka" in removed.stdout, removed.stderr


def test_similar_says_what_a_year_filter_left_out_as_search_does(named_home: Path) -> None:
    env = {"RAG_HOME": str(named_home)}
    search = run_cli("search", "zephyr graphs", "--year", "2010..2030", env=env)
    similar = run_cli("similar", "2406.06563", "--year", "2010..2030", env=env)
    note = "note: 3 of 5 papers have no year and were left out by the filter year 2010..2030"
    assert note in search.stderr and note in similar.stderr, similar.stderr
    backwards = run_cli("similar", "2406.06563", "--year", "2030..2010", env=env)
    assert backwards.returncode == 2 and "give the earlier year first: 2010..2030" in backwards.stderr
