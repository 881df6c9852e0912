"""BibTeX in and out: every LaTeX accent form decoded on import (so ``--author "François Chollet"``
finds ``Chollet, Fran{\\c{c}}ois``), and `rag.index.bibtex.paper_bibtex` writing entries that keep the
original entry type, key and venue and that paper-rag's own reader reads back to the same paper,
on real-world exports (tests/fixtures/real-world.bib: Google Scholar, DBLP, Zotero, ACL Anthology,
arXiv) and on hostile titles, authors and DOIs that try to close a field and open another.
"""

from __future__ import annotations

import json
from pathlib import Path

import bibtexparser
import pytest
from fastapi.testclient import TestClient

from rag.chat import paper_bibtex as chat_paper_bibtex
from rag.index.bibtex import paper_bibtex
from rag.index.corpus import Paper
from rag.index.loaders import load_bibtex, load_file
from rag.ingest.ingestor import Ingestor
from rag.library import catalogue, list_papers
from rag.search.filters import Filters
from rag.settings import Settings
from tests.conftest import FIXTURES

REAL_WORLD = FIXTURES / "real-world.bib"
HOSTILE = [
    {"title": "Braces {and} back\\slash in a title: 100% of $5 ~ ^ & # -- ``quoted''",
     "abstract": "An abstract with {braces}, a stray } and a backslash \\ in it.",
     "authors": ["Mallory <b>Markup</b>}, note = {INJECTED-NOTE", "Eve and Bob, Jr"], "year": 2024,
     "doi": "10.1234/x},note={INJECTED-DOI"},
    {"title": "An @misc{inner, title = {injected}} entry inside a title",
     "abstract": "@article{evil, title={x}} and }}}}} and {{{{{ unbalanced.", "authors": ["Ann O'Neil"],
     "arxiv_id": "2401.00001"},
]


def papers_of(path: Path) -> list[Paper]:
    return [p for p in load_file(path) if isinstance(p, Paper)]


def same(a: Paper, b: Paper) -> None:
    keep = ("id", "title", "abstract", "authors", "year", "doi", "arxiv_id", "categories")
    assert {k: getattr(a, k) for k in keep} == {k: getattr(b, k) for k in keep}
    assert a.links == b.links
    for key in ("entry_type", "bibtex_key", "bibtex"):  # what a BibTeX import kept comes back
        if key in a.extra:
            assert a.extra[key] == b.extra.get(key), key
    assert paper_bibtex(a) == paper_bibtex(b)  # and exporting again writes the same entry


@pytest.mark.parametrize("written, name", [
    (r"Fran{\c{c}}ois Chollet", "François Chollet"), (r"{\L}ukasz Kaiser", "Łukasz Kaiser"),
    (r"Chollet, Fran{\c{c}}ois", "François Chollet"), (r'Bernhard Sch\"{o}lkopf', "Bernhard Schölkopf"),
    (r"Sch{\"o}lkopf, Bernhard", "Bernhard Schölkopf"), (r"J{\'e}r{\^o}me Dupont", "Jérôme Dupont"),
    (r"Ren\'{e} M\"{u}ller", "René Müller"), (r"Dvo{\v r}{\'a}k, Anton{\'\i}n", "Antonín Dvořák"),
    (r"{\O}ystein S{\o}rensen", "Øystein Sørensen"), (r"Stra{\ss}e, G{\"u}nter", "Günter Straße"),
    (r"Mario Lu\v{c}i\'{c}", "Mario Lučić"), (r"{\AA}sa W{\aa}hlin", "Åsa Wåhlin"),
])
def test_every_latex_accent_form_is_decoded(tmp_path: Path, written: str, name: str) -> None:
    path = tmp_path / "one.bib"
    path.write_text(f"@article{{k, title = {{T}}, author = {{{written} and Ada Lovelace}}, abstract = {{A.}}}}\n",
                    encoding="utf-8")
    (paper,) = papers_of(path)
    assert paper.authors == [name, "Ada Lovelace"]


def test_real_world_exports_keep_type_key_venue_and_accents() -> None:
    papers = {p.extra["bibtex_key"]: p for p in papers_of(REAL_WORLD)}
    assert len(papers) == 6
    chollet = papers["chollet2017xception"]
    assert chollet.authors == ["François Chollet"] and chollet.extra["entry_type"] == "inproceedings"
    assert chollet.extra["bibtex"]["booktitle"].startswith("Proceedings of the IEEE conference")
    assert "Łukasz Kaiser" in papers["DBLP:conf/nips/VaswaniSPUJGKP17"].authors
    causal = papers["scholkopf_causal_2021"]
    assert causal.title == "Toward Causal Representation Learning" and causal.authors[0] == "Bernhard Schölkopf"
    assert causal.extra["bibtex"] | {"journal": "Proceedings of the IEEE", "pages": "612–634"} == causal.extra["bibtex"]
    assert papers["zotero_underscore_2019"].doi == "10.5555/jmlr_sparse.2019"  # Zotero's {\_} in a DOI
    assert papers["hoffmann2022training"].categories == ["cs.CL"]  # arXiv's primaryClass
    exported = paper_bibtex(chollet)
    assert exported.startswith("@inproceedings{chollet2017xception,")
    assert "booktitle = {Proceedings of the IEEE conference" in exported and "pages = {1251–1258}" in exported
    assert chat_paper_bibtex is paper_bibtex  # rag.chat re-exports it


def test_author_filter_finds_a_decoded_name(rag_home: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(home=rag_home)
    Ingestor(settings, embedder=embedder).run([REAL_WORLD])
    index = catalogue(settings)
    for query in ("François Chollet", "Francois Chollet", "Łukasz Kaiser", "Schölkopf"):
        assert list_papers(index, Filters(author=query)), query


def test_export_then_ingest_gives_the_same_papers(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_text("".join(json.dumps(r) + "\n" for r in HOSTILE), encoding="utf-8")
    first = Settings(home=tmp_path / "first")
    Ingestor(first, embedder=embedder).run([REAL_WORLD, hostile])
    originals = dict(catalogue(first).papers.items())
    assert len(originals) == 8
    exported = tmp_path / "exported.bib"
    exported.write_text("\n".join(paper_bibtex(p) for p in originals.values()), encoding="utf-8")

    library = bibtexparser.parse_string(exported.read_text(encoding="utf-8"))  # any reader sees 8 entries
    assert len(library.entries) == 8 and not library.failed_blocks
    for entry in library.entries:  # and no field a value tried to add
        assert not {f.key.lower() for f in entry.fields} - {
            "title", "author", "year", "doi", "abstract", "url", "eprint", "archiveprefix", "booktitle",
            "publisher", "pages", "journal", "volume", "number", "month", "issn", "address", "keywords"}, entry.key

    second = Settings(home=tmp_path / "second")
    summary = Ingestor(second, embedder=embedder).run([exported])
    assert not summary.rejected
    again = dict(catalogue(second).papers.items())
    assert set(again) == set(originals)
    for pid, paper in originals.items():
        same(paper, again[pid])


def test_api_bibtex_of_a_hostile_author_adds_no_field(rag_home: Path, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ui.api import create_app

    hostile = tmp_path / "hostile.jsonl"
    hostile.write_text(json.dumps(HOSTILE[0]) + "\n", encoding="utf-8")
    settings = Settings(home=rag_home, llm={"backend": "extractive"})
    Ingestor(settings, embedder=embedder).run([hostile])
    (pid,) = list(catalogue(settings).papers)
    with TestClient(create_app(settings)) as api:
        response = api.get(f"/v1/papers/{pid}/bibtex")
    assert response.status_code == 200, response.text
    (entry,) = bibtexparser.parse_string(response.text).entries
    assert {f.key for f in entry.fields} == {"title", "author", "year", "doi", "abstract"}
    bib = tmp_path / "back.bib"
    bib.write_text(response.text, encoding="utf-8")
    (back,) = [p for p in load_bibtex(bib) if isinstance(p, Paper)]
    assert back.authors == ["Mallory <b>Markup</b>}, note = {INJECTED-NOTE", "Eve and Bob, Jr"]
    assert back.doi == "10.1234/x},note={injected-doi" and back.id == pid
