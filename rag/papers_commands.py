"""``rag papers``: the papers in the index, listed (``list``), shown one by one (``show``), removed (``rm``).

Each prints for people or, with ``--json``, for programs; ``list`` writes tab-separated lines for
cut and awk. Left out: finding papers by meaning (``rag search``, ``rag similar`` in `rag.cli`),
the library functions they call (`rag.library`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rag.cli_options import AuthorOpt, CategoryOpt, YearOpt, parse_filters, settings
from rag.cli_output import console, emit_json, out

papers_app = typer.Typer(help="The papers in the index: list, show, remove.", no_args_is_help=True)


@papers_app.command("list")
def papers_list(
    year: YearOpt = None,
    author: AuthorOpt = None,
    category: CategoryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list (records without abstracts).")] = False,
) -> None:
    """Every indexed paper (newest first) with its id, year and title; filters as in `rag search`."""
    from rag.library import catalogue, chunk_counts, list_papers, paper_summary

    filters = parse_filters(year, author, category)  # a mistyped filter is said before the index is read
    index = catalogue(settings())
    papers, counts = list_papers(index, filters), chunk_counts(index)
    if as_json:
        emit_json([paper_summary(p, counts.get(p.id)) for p in papers])
        return
    for p in papers:  # tab-separated, for cut and awk (rich would expand the tabs)
        sys.stdout.write(f"{p.id}\t{p.year or '-'}\t{p.title}\n")
    console.print(f"{len(papers)} of {len(index.papers)} papers", markup=False, highlight=False)


@papers_app.command("show")
def papers_show(
    paper_id: Annotated[str, typer.Argument(help="A paper: its id, exact title, arXiv id or DOI.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """One paper's record: title, authors, year, categories, links, chunks and abstract."""
    from rag.index.injection import instruction_sentences
    from rag.library import catalogue, chunk_counts, get_paper, paper_summary

    index = catalogue(settings())
    paper = get_paper(index, paper_id)
    flagged = instruction_sentences(paper.title) + instruction_sentences(paper.abstract)
    data = paper_summary(paper, chunk_counts(index).get(paper.id)) | {"abstract": paper.abstract,
                                                                      "instruction_sentences": flagged}
    if as_json:
        emit_json(data)
        return
    from rich.text import Text

    out.print(Text(paper.title, style="bold"))
    for key in ("paper_id", "authors", "year", "categories", "doi", "arxiv_id", "links", "chunks"):
        value = data.get(key)
        if value not in (None, [], ""):
            out.print(Text(f"{key:>10}: {', '.join(map(str, value)) if isinstance(value, list) else value}"))
    out.print(Text(f"\n{paper.abstract}"))
    from rag.ingest.ingest_summary import INSTRUCTION_NOTE

    for sentence in flagged:
        out.print(Text.assemble(("\nflagged ", "yellow"), f"{INSTRUCTION_NOTE}: {sentence!r}"))


@papers_app.command("rm")
def papers_rm(
    paper_ids: Annotated[list[str], typer.Argument(help="Papers to remove, each by id, exact title, arXiv id or DOI "
                                                        "(all must be in the index).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Remove papers: their chunks leave Chroma and the lexical index; running servers notice within a second."""
    from rag.library import remove_papers

    removal = remove_papers(settings(), paper_ids)
    if as_json:
        emit_json(removal.as_dict())
        return
    for pid, title in zip(removal.removed, removal.titles):
        out.print(f"removed {pid}  {title}", markup=False, highlight=False)
    out.print(f"{removal.chunks_deleted} chunks deleted; {removal.papers_left} papers left", markup=False,
              highlight=False)


__all__ = ["papers_app"]
