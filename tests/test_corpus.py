"""Loaders on small real-looking files, malformed ones included; identity and merging."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.errors import CorpusError, RecordError
from rag.index.corpus import normalise_title, paper_id
from rag.index.loaders import load_file, load_paths, write_jsonl

from .conftest import BUNDLED, FIXTURES, ROOT

SEED = ROOT.parent / "shared" / "seed" / "000_807e2619a8b8fbba.txt"


def split(path: Path):
    items = list(load_file(path))
    return [i for i in items if not isinstance(i, RecordError)], [i for i in items if isinstance(i, RecordError)]


def test_bundled_corpus_has_184_papers_with_exact_titles() -> None:
    report = load_paths([BUNDLED])
    assert len(report.papers) == 184 and not report.errors and not report.merged
    titles = [p.title for p in report.papers.values()]
    assert titles[0] == "Collaborative Development of NLP models"  # "Subscribe" prefix removed
    assert titles[-1].startswith("Improving Temporal Generalization of Pre-trained Language Models")


@pytest.mark.skipif(not SEED.exists(), reason="shared seed not beside the checkout")
def test_committed_corpus_matches_the_seed_file() -> None:
    seed = load_paths([SEED])
    committed = load_paths([BUNDLED])
    assert [(p.title, p.abstract) for p in seed.papers.values()] == \
           [(p.title, p.abstract) for p in committed.papers.values()]
    lines = SEED.read_text(encoding="utf-8").splitlines()[2:]
    assert [p.title for p in seed.papers.values()] == [lines[0].removeprefix("Subscribe"), *lines[2::2]]


def test_trending_format_reports_a_dangling_title() -> None:
    papers, errors = split(FIXTURES / "trending.txt")
    assert [p.title for p in papers] == ["First Paper Title", "Second Paper"]
    assert len(errors) == 1 and errors[0].line == 7 and "no abstract" in str(errors[0])


def test_jsonl_keeps_good_records_and_names_bad_lines() -> None:
    papers, errors = split(FIXTURES / "mixed.jsonl")
    assert [e.line for e in errors] == [2, 3]
    assert "bad JSON" in str(errors[0]) and "mixed.jsonl:2" in str(errors[0])
    assert "no abstract" in str(errors[1])
    first, arxiv, _dup = papers
    assert first.urls == ["https://github.com/example/sparsedoc"]
    assert "https://github.com/example/sparsedoc" in first.abstract  # links stay in the text
    assert first.authors == ["Ada Lovelace", "Alan Turing"] and first.year == 2024
    assert arxiv.id == "arxiv:2310.01234" and arxiv.arxiv_id == "2310.01234"  # version stripped
    assert arxiv.authors == ["Grace Hopper", "Claude Shannon"]
    assert arxiv.categories == ["eess.AS", "cs.SD"] and arxiv.year == 2023


def test_duplicates_merge_later_record_wins() -> None:
    report = load_paths([FIXTURES / "mixed.jsonl"])
    assert len(report.papers) == 2 and len(report.merged) == 1
    merged = report.papers[report.merged[0][0]]
    assert "SparseDoc v2" in merged.abstract and merged.year == 2025


def test_same_paper_in_two_files_is_merged(tmp_path: Path) -> None:
    other = tmp_path / "again.jsonl"
    other.write_text('{"title": "Quantized speech recognition", "abstract": "Updated.", '
                     '"arxiv_id": "arXiv:2310.01234"}\n')
    report = load_paths([FIXTURES / "mixed.jsonl", other])
    assert report.papers["arxiv:2310.01234"].abstract == "Updated."
    assert any(m[0] == "arxiv:2310.01234" and m[2] == str(other) for m in report.merged)


def test_json_array_in_arxiv_snapshot_format() -> None:
    papers, errors = split(FIXTURES / "arxiv_array.json")
    assert [p.id for p in papers] == ["arxiv:2401.00001", "arxiv:hep-th/9901001"]
    assert papers[0].doi == "10.1000/gt.2024" and papers[0].authors == ["A. Author", "B. Author"]
    assert papers[1].year == 1999
    assert len(errors) == 1 and errors[0].line == 4 and "no title" in str(errors[0])


def test_csv_case_insensitive_header_extra_columns_and_line_numbers() -> None:
    papers, errors = split(FIXTURES / "papers.csv")
    assert [p.title for p in papers] == ["Retrieval with Mixtures", "Multi Line Title"]
    assert papers[0].extra == {"venue": "ACL"} and papers[0].year == 2024
    assert len(errors) == 1 and errors[0].line == 3


def test_bibtex_entries() -> None:
    papers, errors = split(FIXTURES / "zotero.bib")
    assert [p.title for p in papers] == ["Contrastive Learning for Tables", "Diffusion Policies for Robots"]
    assert papers[0].doi == "10.5555/tables.2024" and papers[0].authors == ["Jane Smith", "John Doe"]
    assert papers[0].urls == ["https://github.com/jsmith/tables"]
    assert papers[1].id == "arxiv:2502.01234"
    assert {e.line for e in errors} == {20, 26}
    assert any("no title" in str(e) for e in errors) and any("no abstract" in str(e) for e in errors)


@pytest.mark.parametrize("name, message", [
    ("latin1.csv", "not UTF-8"), ("missing.jsonl", "no such file"), ("notes.docx", "unknown extension"),
    ("empty.jsonl", "is empty"),
])
def test_unreadable_files_raise_one_clear_error(tmp_path: Path, name: str, message: str) -> None:
    path = FIXTURES / name if (FIXTURES / name).exists() else tmp_path / name
    if name in ("notes.docx", "empty.jsonl"):
        path.write_bytes(b"" if name == "empty.jsonl" else b"PK\x03\x04")
    with pytest.raises(CorpusError, match=message) as info:
        load_paths([path])
    assert info.value.fix or message == "no such file"


def test_non_utf8_jsonl_line_is_one_rejected_record() -> None:
    _, errors = split(FIXTURES / "latin1.jsonl")
    assert len(errors) == 1 and "not UTF-8" in str(errors[0])


def test_identity_prefers_arxiv_then_doi_then_title() -> None:
    assert paper_id("T", "2301.00001", "10.1/x") == "arxiv:2301.00001"
    assert paper_id("T", None, "10.1/x") == "doi:10.1/x"
    assert paper_id("BERT: Pre-Training!") == paper_id("bert pre training")
    assert normalise_title("Café  Über-Net") == "cafe uber net"


def test_folder_loading_and_round_trip(tmp_path: Path) -> None:
    report = load_paths([FIXTURES / "zotero.bib", FIXTURES / "arxiv_array.json"])
    out = tmp_path / "sub" / "out.jsonl"
    out.parent.mkdir()
    write_jsonl(report.papers.values(), out)
    again = load_paths([tmp_path])
    assert list(again.papers) == list(report.papers)
    assert [p.authors for p in again.papers.values()] == [p.authors for p in report.papers.values()]


# ---------------------------------------------------------------- hostile and careless input (issue 16)

GOOD = '{"title": "A good paper", "abstract": "It is fine."}'


@pytest.mark.parametrize("bad, reason", [
    ('{"a": ' * 100_000 + "1" + "}" * 100_000, "nested"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
    ('{"title": "T1", "abstract": "A1", "extra": "notadict"}', "`extra`"),
    ('{"title": "T2", "abstract": "A2", "extra": [1, 2]}', "`extra`"),
    ('{"title": "T3", "abstract": "A3", "authors_parsed": 5}', "`authors_parsed`"),
    ('{"title": "T4", "abstract": "A4", "authors": [[1, 2]]}', "`authors`"),
    ('{"title": "Lone \\ud800 surrogate", "abstract": "A5"}', "surrogate"),
    ('{"title": "T6", "abstract": "A6", "extra": {"note": "\\udfff"}}', "surrogate"),
    ('{"title": "T7", "abstract": "A7", "year": ' + "9" * 5000 + "}", "bad JSON"),
])
def test_one_bad_jsonl_record_is_rejected_and_the_rest_loads(tmp_path: Path, bad: str, reason: str) -> None:
    path = tmp_path / "hostile.jsonl"
    path.write_text(f"{GOOD}\n{bad}\n" + GOOD.replace("good", "second") + "\n", encoding="utf-8")
    papers, errors = split(path)
    assert [p.title for p in papers] == ["A good paper", "A second paper"]
    assert len(errors) == 1 and errors[0].line == 2 and reason in str(errors[0]), errors
    assert str(errors[0]).startswith(f"{path}:2: ")


@pytest.mark.heavy
def test_hostile_records_through_ingest_cli_exit_1_not_internal_error(tmp_path: Path) -> None:
    from .conftest import run_cli

    path = tmp_path / "hostile.jsonl"
    lines = [GOOD, '{"a": ' * 100_000 + "1" + "}" * 100_000, '{"title": "T", "abstract": "A", "extra": [1, 2]}',
             '{"title": "T", "abstract": "A", "authors_parsed": 5}', '{"title": "\\ud800", "abstract": "A"}']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_cli("ingest", str(path))
    assert result.returncode == 1, result.stderr
    assert "1 new" in result.stdout and "4 rejected" in result.stdout
    assert all(f"hostile.jsonl:{n}" in result.stderr for n in (2, 3, 4, 5))
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_blank_lines_before_a_record_are_not_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "spaced.jsonl"
    path.write_text("\n" * 5000 + GOOD + "\n", encoding="utf-8")
    papers, errors = split(path)
    assert [p.title for p in papers] == ["A good paper"] and not errors
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n \t\n" * 5000, encoding="utf-8")
    with pytest.raises(CorpusError, match="is empty"):
        load_paths([blank])


def test_csv_with_title_and_Title_columns_is_an_error_naming_them(tmp_path: Path) -> None:
    path = tmp_path / "two-titles.csv"
    path.write_text("title,abstract,Title\nFirst,An abstract.,Second\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="'title' and 'Title'") as info:
        load_paths([path])
    assert "rename" in info.value.fix


def test_json_array_reports_element_lines_and_loads_in_linear_time(tmp_path: Path) -> None:
    import json
    import time

    records = [{"title": f"Paper number {i}", "abstract": f"Abstract {i} text."} for i in range(20_000)]
    array, lines = tmp_path / "a.json", tmp_path / "a.jsonl"
    array.write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n", encoding="utf-8")
    lines.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    timings, loaded = {}, {}
    for path in (array, lines):
        started = time.perf_counter()
        loaded[path.suffix] = list(load_file(path))
        timings[path.suffix] = time.perf_counter() - started
    assert [p.title for p in loaded[".json"]] == [p.title for p in loaded[".jsonl"]]
    assert timings[".json"] < 2 * timings[".jsonl"] + 0.5, timings  # quadratic: 5 s against 0.2 s


def test_json_array_bad_element_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "arr.json"
    path.write_text('[\n  {"title": "A", "abstract": "B"},\n  {"title": "C", "abstract": "D", "extra": 3},\n  5\n]\n',
                    encoding="utf-8")
    papers, errors = split(path)
    assert [p.title for p in papers] == ["A"] and [e.line for e in errors] == [3, 4]


# ---------------------------------------------------------------- LaTeX and HTML in imports

LATEX_BIB = r"""@article{lucic2018,
  title = {Are {GAN}s Created Equal? A Large-Scale Study with 80.5\% of Q\&A},
  author = {Lu\v ci\'c, Mario and R\"atsch, Gunnar and Sch{\"o}lkopf, Bernhard and Dess\`i, Roberto},
  abstract = {We reach 80.5\% on Q\&A, a $5\times$ speedup in $O(n^2)$ time; 40% of runs,
              see https://github.com/x/y_z%20 and \emph{more}.},
  year = {2018},
}
"""


def test_bibtex_latex_is_decoded_to_unicode(tmp_path: Path) -> None:
    path = tmp_path / "latex.bib"
    path.write_text(LATEX_BIB, encoding="utf-8")
    (paper,), errors = split(path)
    assert not errors
    assert paper.authors == ["Mario Lučić", "Gunnar Rätsch", "Bernhard Schölkopf", "Roberto Dessì"]
    assert paper.title == "Are GANs Created Equal? A Large-Scale Study with 80.5% of Q&A"
    assert paper.abstract == ("We reach 80.5% on Q&A, a 5× speedup in O(n^2) time; 40% of runs, "
                              "see https://github.com/x/y_z%20 and more.")
    assert "\\" not in paper.abstract and "{" not in paper.abstract


def test_arxiv_snapshot_latex_and_html_entities_are_decoded(tmp_path: Path) -> None:
    import json

    path = tmp_path / "arxiv.jsonl"
    record = {"id": "1711.10337", "title": "Are GANs Created Equal? &#8220;A&#8221; Study",
              "authors": "Mario Lu\\v ci\\'c, Karol Kurach, Bernhard Sch\\\"olkopf",
              "abstract": "Accuracy 80.5\\% on Q\\&A with a 5\\$\\textbackslash times\\$ speedup &amp; more.",
              "authors_parsed": [["Lu\\v ci\\'c", "Mario", ""]]}
    plain = {"title": "Plain text keeps 40% and $5 as written", "abstract": "R&D at AT&T costs $5 for 40% &c."}
    path.write_text(json.dumps(record) + "\n" + json.dumps(plain) + "\n", encoding="utf-8")
    (arxiv, kept), _ = split(path)
    assert arxiv.title == "Are GANs Created Equal? “A” Study"
    assert arxiv.authors == ["Mario Lučić", "Karol Kurach", "Bernhard Schölkopf"]
    assert arxiv.abstract == "Accuracy 80.5% on Q&A with a 5× speedup & more."
    assert (kept.title, kept.abstract) == (plain["title"], plain["abstract"])


def test_bundled_corpus_titles_keep_their_ids_after_decoding() -> None:
    from eval.datasets import load_dataset

    gold = {g for q in load_dataset("dev").questions for g in q.gold or []}
    papers = load_paths([BUNDLED]).papers
    assert gold and gold <= set(papers)
    assert any("TÜLU 3" in p.abstract for p in papers.values())  # T\"ULU in the page copy
