"""Counts and messages that explain themselves (issue 16): re-ingest summaries, repeated records,
a broken .bib, filters that match nothing or leave papers out, and what a score above 1 means."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

import rag.ingest.ingest_summary
import rag.ingest.ingestor
import rag.search.retrieval
from rag.index.embeddings import Embedder
from rag.index.loaders import load_bibtex
from rag.ingest.ingestor import Ingestor
from rag.search.filters import Filters
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.conftest import FIXTURES


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def cli(embedder: Embedder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """``rag ARGS`` in this process with the session's embedder; returns (exit code, stdout, stderr)."""
    import rag.cli

    monkeypatch.setattr(rag.ingest.ingestor, "Embedder", lambda settings=None: embedder)
    monkeypatch.setattr(rag.search.retrieval, "Embedder", lambda settings=None: embedder)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["rag", *args])
        with pytest.raises(SystemExit) as info:
            rag.cli.main()
        got = capsys.readouterr()
        return int(info.value.code or 0), got.out, got.err

    return run


# ------------------------------------------------------------------ re-ingest summary


def test_reingest_separates_changed_text_from_metadata_only(tmp_path: Path, rag_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    rows = [json.loads(line) for line in (FIXTURES / "hybrid.jsonl").read_text().splitlines()[:4]]
    first = write_jsonl(tmp_path / "a" / "papers.jsonl", rows)
    code, out, _ = cli("ingest", str(first))
    assert code == 0 and "papers: 4 new, 0 changed, 0 metadata only, 0 unchanged" in out

    moved = tmp_path / "b" / "papers.jsonl"  # the same file from another folder: only the source changed
    moved.parent.mkdir()
    shutil.copy(first, moved)
    code, out, _ = cli("ingest", str(moved))
    assert "papers: 0 new, 0 changed, 4 metadata only, 0 unchanged" in out and "chunks: 0 embedded" in out

    rows[0]["abstract"] += " A new closing sentence."
    rows[1]["year"] = 2011
    write_jsonl(moved, rows)
    summary = Ingestor(Settings()).run([moved])
    assert (summary.new, summary.changed, summary.metadata_only, summary.unchanged) == (0, 1, 1, 2)
    assert summary.updated == 2 and summary.chunks_embedded == 1
    assert json.loads(rag.ingest.ingest_summary.summary_json(summary))["metadata_only"] == 1


# ------------------------------------------------------------------ repeated records


def test_repeated_records_are_summarised(tmp_path: Path, rag_home: Path, cli, embedder: Embedder) -> None:  # type: ignore[no-untyped-def]
    row = {"title": "The one paper", "abstract": "It appears many times in this file."}
    bad = {"title": "", "abstract": "no title"}
    path = write_jsonl(tmp_path / "repeated.jsonl", [row] * 3000 + [bad] * 40)
    code, out, err = cli("ingest", str(path))
    assert code == 1 and "papers: 1 new" in out and "2999 merged, 40 rejected" in out
    lines = err.strip().splitlines()
    merged = [line for line in lines if line.startswith("merged ")]
    assert len(merged) == rag.ingest.ingest_summary.SHOWN
    assert "... and 2,989 more merged records (later record kept)" in lines
    assert "... and 30 more rejected records" in lines and len(lines) < 60, len(lines)

    from ui.app import WebApp

    app = WebApp(Settings(llm={"backend": "extractive"}), embedder=embedder)
    report, *_ = app.upload([str(path)])
    assert report.count("\nmerged ") + report.startswith("merged ") <= rag.ingest.ingest_summary.SHOWN
    assert "... and 2,989 more merged records" in report and "... and 30 more rejected records" in report
    assert "0 changed, 1 metadata only" in report  # the same paper, now from upload:repeated.jsonl


# ------------------------------------------------------------------ a broken .bib


def test_a_broken_bib_entry_is_one_message(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bib = tmp_path / "refs.bib"
    bib.write_text("@article{good1,\n  title = {A good paper},\n  abstract = {It is good.},\n}\n\n"
                   "@article{broken2,\n  title = {Missing brace paper,\n  abstract = {This entry never closes.},\n}\n\n"
                   "@article{good3,\n  title = {Another good paper},\n  abstract = {Also good.},\n}\n")
    items = list(load_bibtex(bib))
    errors = [i for i in items if not hasattr(i, "title")]
    assert [i.title for i in items if hasattr(i, "title")] == ["A good paper", "Another good paper"]
    (error,) = errors
    assert str(error).startswith(f"{bib}:6: entry `@article{{broken2,` cannot be read: unexpected block start")
    assert "does not end before the next one" in str(error) and error.fix
    captured = capfd.readouterr()
    assert "aborted on line" not in captured.err + captured.out  # no second, raw account from the parser

    bib.write_text("@article{open,\n  title = {Never closed}\n")
    (error,) = list(load_bibtex(bib))
    assert str(error) == f"{bib}:1: entry `@article{{open,` cannot be read: unexpectedly reached end of file"


# ------------------------------------------------------------------ filters that explain themselves


@pytest.fixture
def years_home(tmp_path: Path, rag_home: Path, embedder: Embedder) -> Settings:
    """6 papers, 2 of them with a year (2019, 2023)."""
    rows = [json.loads(line) for line in (FIXTURES / "hybrid.jsonl").read_text().splitlines()[:6]]
    for row in rows:
        row.pop("year", None)
    rows[0]["year"], rows[1]["year"] = 2019, 2023
    settings = Settings()
    Ingestor(settings, embedder=embedder).run([write_jsonl(tmp_path / "years.jsonl", rows)])
    return settings


def test_a_filter_that_matches_nothing_says_how_many_papers_have_the_field(years_home: Settings,
                                                                          embedder: Embedder) -> None:
    retriever = Retriever(years_home, embedder=embedder)
    result = retriever.search("retrieval", filters=Filters(2024, 2025))
    assert result.hits == []
    assert result.empty_because == ("no paper matches the filter year 2024..2025; "
                                    "2 of 6 papers have a year (2019–2023)")
    result = retriever.search("retrieval", filters=Filters(author="Nobody Known"))
    assert result.empty_because == "no paper matches the filter author 'Nobody Known'; 6 of 6 papers have authors"


def test_an_open_year_range_says_how_many_papers_it_left_out(years_home: Settings, embedder: Embedder) -> None:
    result = Retriever(years_home, embedder=embedder).search("retrieval", filters=Filters(2020, None))
    assert [h.paper.year for h in result.hits] == [2023]
    assert "4 of 6 papers have no year and were left out by the filter year 2020.." in result.notices


def test_no_paper_has_the_field(tmp_path: Path, rag_home: Path, embedder: Embedder) -> None:
    rows = [json.loads(line) for line in (FIXTURES / "hybrid.jsonl").read_text().splitlines()[:3]]
    for row in rows:
        row.pop("year", None)
    Ingestor(Settings(), embedder=embedder).run([write_jsonl(tmp_path / "noyears.jsonl", rows)])
    result = Retriever(Settings(), embedder=embedder).search("retrieval", filters=Filters(2023, 2025))
    assert result.empty_because == "no paper matches the filter year 2023..2025: no paper in the index has a year"


def test_cli_search_shows_the_counts(years_home: Settings, cli) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli("search", "retrieval", "--year", "2020..")
    assert code == 0 and "4 of 6 papers have no year and were left out" in err
    code, out, _ = cli("search", "retrieval", "--year", "2030")
    assert code == 0 and "no results: no paper matches the filter year 2030..2030; 2 of 6 papers have a year" in out


def test_web_year_info_counts_the_papers_with_a_year(years_home: Settings, embedder: Embedder) -> None:
    from ui.app import WebApp

    app = WebApp(years_home, embedder=embedder)
    year_info = app.facet_updates()[1]["info"]
    assert year_info == "2 of 6 papers have a year (2019–2023)"


# ------------------------------------------------------------------ smaller things


def test_tsv_authors_given_last_first_are_split_into_names(tmp_path: Path) -> None:
    from rag.index.loaders import load_paths

    tsv = tmp_path / "papers.tsv"
    tsv.write_text("title\tabstract\tauthors\n"
                   "Grokking\tNetworks generalise long after overfitting.\tPower, Alethea, Burda, Yuri\n"
                   "Attention\tAttention is all you need.\tVaswani, A. and Shazeer, N.\n"
                   "Plain\tNames as written.\tAda Lovelace, Alan Turing\n", encoding="utf-8")
    authors = {p.title: p.authors for p in load_paths([tsv]).papers.values()}
    assert authors == {"Grokking": ["Alethea Power", "Yuri Burda"], "Attention": ["A. Vaswani", "N. Shazeer"],
                       "Plain": ["Ada Lovelace", "Alan Turing"]}


def test_a_score_above_one_is_explained(tmp_path: Path, rag_home: Path, embedder: Embedder, cli) -> None:  # type: ignore[no-untyped-def]
    from rag.search.retrieval import SCORE_SCALE
    from ui import render

    Ingestor(Settings(), embedder=embedder).run([FIXTURES / "hybrid.jsonl"])
    result = Retriever(Settings(), embedder=embedder).search("What does ZQRT speed up?")
    top = result.hits[0]
    assert top.paper.title.startswith("ZQRT") and top.score > 1 and 0 < top.name_bonus <= 0.2 * top.score
    assert top.score - top.name_bonus <= 1 + 1e-9  # the fused part stays in 0..1
    assert top.as_dict()["name_bonus"] == round(top.name_bonus, 6)
    code, out, _ = cli("search", "What does ZQRT speed up?")
    assert code == 0 and f"name match +{top.name_bonus:.3f}" in out
    code, out, _ = cli("search", "What does ZQRT speed up?", "--json")
    assert json.loads(out)[0]["name_bonus"] > 0
    from rag.answer.answer_result import Citation

    html = render.card_html(Citation(1, top.paper, True, top.score))
    assert "up to 1.2" in SCORE_SCALE and render.esc(SCORE_SCALE) in html
