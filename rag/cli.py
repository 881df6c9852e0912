"""The ``rag`` command: a thin typer layer over the library.

Each command parses options, calls one library function and prints its result
(a rich table for people, ``--json`` for programs). Errors the user can act on
(`RagError`) are printed as one line plus the fix, exit status 2; nothing prints a
stack trace unless ``RAG_DEBUG=1``. Heavy imports happen inside commands so that
``rag --help`` is instant.

The core commands live here, ``rag papers`` in `rag.papers_commands`, the ``rag chat`` loop in
`rag.chat_repl`; their shared options are `rag.cli_options`, where they write `rag.cli_output`, a
failed command's line `rag.cli_errors`. Other packages add theirs (``ui``: serve, api, mcp; ``eval``: eval,
bench) through entry points in the ``paper_rag.commands`` group, each naming a
``register_commands(app)`` function (simonw/llm's plugin hook), loaded by `load_commands`. So the
library never imports its interfaces, and an install without them still has a working ``rag``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from rag.cli_errors import settings_error, show_error, usage_error
from rag.cli_options import (
    CLI_PARAMS,
    AuthorOpt,
    BackendOpt,
    CategoryOpt,
    KOpt,
    ModelOpt,
    YearOpt,
    answer_settings,
    choice_of,
    parse_filters,
    settings,
)
from rag.cli_output import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_REJECTED,
    console,
    emit_json,
    out,
    print_hits,
    print_notices,
    show_answer,
)
from rag.errors import RagError
from rag.papers_commands import papers_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Cited question answering over paper abstracts.")

app.add_typer(papers_app, name="papers")  # rag papers list | show | rm (`rag.papers_commands`)

COMMANDS_GROUP = "paper_rag.commands"  # entry points: NAME = "module:register_commands"






@app.command()
def ingest(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Corpus files or folders (.txt .jsonl .json .csv .tsv .bib).", show_default=False)] = None,
    bundled: Annotated[bool, typer.Option("--bundled", help="Also ingest the corpus shipped with paper-rag "
                                          "(184 ML papers: data/papers.jsonl).")] = False,
    rebuild: Annotated[bool, typer.Option(help="Drop the index and embed everything again.")] = False,
    strict: Annotated[bool, typer.Option(help="Reject the whole run if any record is malformed.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="With --rebuild: drop the indexed papers these files do not "
                                      "hold without asking.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Index corpus files into the data home (idempotent: unchanged papers are skipped)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.text import Text

    from rag.bundled import CORPUS, bundled_file
    from rag.ingest.ingest_summary import record_lines, summary_lines
    from rag.ingest.ingestor import Ingestor

    paths = [*(paths or []), *([bundled_file(CORPUS)] if bundled else [])]
    if not paths:
        raise typer.BadParameter("name the paths of corpus files or folders, or pass --bundled for the corpus "
                                 "shipped with paper-rag", param_hint="PATHS")
    cfg = settings()
    columns = [TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TextColumn("chunks"),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True, disable=as_json) as progress:
        task = progress.add_task("embed", total=0, rate="")

        def on_start(total: int) -> None:
            progress.update(task, total=total)

        def on_embedded(n: int) -> None:
            progress.advance(task, n)
            speed = progress.tasks[0].speed
            progress.update(task, rate=f"{speed:.0f} chunks/s" if speed else "")

        summary = Ingestor(cfg).run(paths, rebuild=rebuild, drop_ok=yes, strict=strict, on_start=on_start,
                                    on_embedded=on_embedded)
    for kind, line in record_lines(summary):  # ten of each kind, then a count
        console.print(Text.assemble((f"{kind} ", "yellow") if kind != "more" else "", line))
    if as_json:
        emit_json(summary.as_dict())
    else:
        out.print("\n".join(summary_lines(summary, str(cfg.home))), markup=False, highlight=False)
    if summary.rejected:
        raise typer.Exit(EXIT_REJECTED)


@app.command()
def stats(as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Papers, chunks, embedder and store location of the index."""
    from rag.ingest.ingestor import stats as index_stats

    data = index_stats(settings())
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        out.print(f"{key:>20}: {value}", markup=False, highlight=False)
    if not data["ingested"]:
        from rag.errors import EmptyIndexError

        console.print(f"nothing ingested yet: {EmptyIndexError.fix}", markup=False, highlight=False)




@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Keywords, a title, or a question.")],
    k: KOpt = None,
    year: YearOpt = None,
    author: AuthorOpt = None,
    category: CategoryOpt = None,
    fusion: Annotated[str | None, typer.Option(help="weighted, rrf, dense or lexical.",
                                               callback=choice_of("retrieval", "fusion"))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list, best first.")] = False,
) -> None:
    """Ranked papers for a query, with scores and the best matching snippet."""
    from rag.answer.request import check_k
    from rag.search.retrieval import Retriever

    cfg = settings()
    filters = parse_filters(year, author, category)
    result = Retriever(cfg).search(query, k=check_k(cfg, k, "-k"), filters=filters, fusion=fusion)
    print_notices(result.notices)
    if as_json:
        emit_json([h.as_dict() for h in result.hits])
    elif result.empty_because:
        out.print(f"no results: {result.empty_because}", markup=False)
    else:
        print_hits(result.hits)




@app.command()
def similar(
    paper_id: Annotated[str, typer.Argument(help="A paper: its id (see `rag papers list` or `rag search`), exact "
                                                 "title, arXiv id or DOI.")],
    k: KOpt = None,
    year: YearOpt = None,
    author: AuthorOpt = None,
    category: CategoryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list, nearest first.")] = False,
) -> None:
    """Papers nearest to one paper by its stored vectors (nothing re-embedded), itself excluded."""
    from rag.library import similar_papers
    from rag.search.retrieval import Retriever

    filters = parse_filters(year, author, category)
    result = similar_papers(Retriever(settings()), paper_id, k=k or 5, filters=filters)
    print_notices(result.notices)
    if as_json:
        emit_json([h.as_dict() for h in result.hits])
    elif result.empty_because:
        out.print(f"no results: {result.empty_because}", markup=False)
    else:
        out.print(f"papers similar to {result.paper.title} ({result.paper.id}):", markup=False, highlight=False)
        print_hits(result.hits)








@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="A question about the indexed papers.")],
    backend: BackendOpt = None,
    model: ModelOpt = None,
    k: KOpt = None,
    year: YearOpt = None,
    author: AuthorOpt = None,
    category: CategoryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result object as JSON.")] = False,
) -> None:
    """Answer one question, streamed, then the cited papers with their evidence."""
    from rag.answer.answerer import Answerer
    from rag.answer.request import AskRequest
    from rag.chat import Conversation
    from rag.table.terminal import table_turn

    cfg = settings()
    request = AskRequest.of(cfg, question, backend=backend, model=model, k=k, year=year, author=author,
                            category=category, params=CLI_PARAMS)
    answerer = Answerer(request.settings(cfg))
    if (made := table_turn(Conversation(answerer), request.question, console, None if as_json else out,
                           k=request.k, filters=request.filters)) is not None:  # "make a table of ..."
        if as_json:
            emit_json(made.as_dict())
        return
    answer = show_answer(Conversation(answerer).respond(request), as_json,
                                backend_notes=lambda: answerer.backend_for()[1])
    if answer.error:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def table(
    query: Annotated[str | None, typer.Argument(help="A search whose papers become the rows.")] = None,
    papers: Annotated[list[str] | None, typer.Option(
        "--papers", "--paper", help="A paper to include, by id, exact title, arXiv id or DOI (repeat for more).")]
    = None,
    columns: Annotated[str | None, typer.Option(
        "--columns", help="Built-in columns: task, method, data, result, model_size, code (comma-separated; "
                          "default task,method,data,result).")] = None,
    questions: Annotated[list[str] | None, typer.Option(
        "--column", help='A column of your own, as a question: --column "Which optimizer is used?" (repeatable).')]
    = None,
    k: Annotated[int | None, typer.Option("-k", min=1, help="Papers (rows); 10 by default.")] = None,
    year: YearOpt = None,
    author: AuthorOpt = None,
    category: CategoryOpt = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    overview: Annotated[str, typer.Option(help="The sentences above the table: cells (written from the checked "
                                               "cells, no model call), model (a checked answer), none.")] = "cells",
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Also write the table as CSV.")] = None,
    md_path: Annotated[Path | None, typer.Option("--md", help="Also write the table as Markdown.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as one JSON object.")] = False,
) -> None:
    """Compare papers: their task, method, data, results... side by side, every cell checked against its abstract."""
    from rag.answer.answerer import Answerer
    from rag.table.columns import parse_columns
    from rag.table.export import to_csv, to_markdown
    from rag.table.maker import TableMaker
    from rag.table.terminal import make_with_progress, print_table

    chosen = parse_columns(columns, questions or [])  # a mistyped column is said before anything loads
    maker = TableMaker(Answerer(answer_settings(backend, model)))
    result = make_with_progress(maker, console, query=query, paper_ids=papers or [], columns=chosen, k=k,
                                filters=parse_filters(year, author, category), overview=overview)
    print_notices(result.notes)
    for path, render in ((csv_path, to_csv), (md_path, to_markdown)):
        if path is not None:
            path.write_text(render(result), encoding="utf-8")
            console.print(f"wrote {path}", markup=False, highlight=False)
    if as_json:
        emit_json(result.as_dict())
    else:
        print_table(result, out)




@app.command()
def chat(
    backend: BackendOpt = None,
    model: ModelOpt = None,
    k: KOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one result object (JSON) per turn.")] = False,
) -> None:
    """A conversation. /new starts over, /md and /bib export, /help lists the commands, /quit (or Ctrl-D) leaves.

    Reads questions line by line from standard input when it is not a terminal; with --json it
    prints one result object per turn, one per line (a scripted conversation for evaluation:
    `printf 'Q1\\nQ2\\n' | rag chat --json`). Exit status 1 when any turn failed (an error, or an
    answer the backend cut short), so a script notices."""
    from rag.chat_repl import converse

    converse(backend, model, k, as_json)


_loaded: set[tuple[int, str]] = set()


def load_commands(target: typer.Typer | None = None) -> list[str]:
    """Call every installed ``paper_rag.commands`` entry point's ``register_commands(target)``, once per app.

    A package whose commands fail to load is reported on stderr and skipped: the other commands
    still work. Returns the names of the entry points registered by this call."""
    from importlib.metadata import entry_points

    target = target or app
    done = []
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        if (id(target), ep.name) in _loaded:
            continue
        _loaded.add((id(target), ep.name))
        try:
            register = ep.load()
        except Exception as err:  # a broken plugin must not take the core commands down
            console.print(f"warning: the {ep.name} commands ({ep.value}) did not load: {type(err).__name__}: {err}",
                          markup=False, highlight=False)
            continue
        register(target)
        done.append(ep.name)
    return done




def main() -> None:
    """Entry point: runs the app and turns user errors (ours, usage, settings) into one line each, exit 2."""
    from pydantic import ValidationError

    from rag.environment import COMMANDS, set_defaults

    debug = os.environ.get("RAG_DEBUG") == "1"
    set_defaults(COMMANDS)  # Hugging Face offline, Chroma telemetry off (the subcommands' own children inherit it)
    load_commands()
    try:
        from rag.settings import check_environment

        check_environment()  # a mistyped RAG_* variable would otherwise be ignored
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except RagError as err:
        show_error(err, debug)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        console.print("interrupted")
        sys.exit(130)
    except typer.TyperException as err:  # typer's own click: usage errors are the user's mistake
        if err.exit_code == EXIT_ERROR and hasattr(err, "ctx") and type(err).__name__ != "NoArgsIsHelpError":
            show_error(usage_error(err), debug)
        err.show()  # type: ignore[attr-defined]  # help text (no arguments given) and other click messages
        sys.exit(err.exit_code)
    except ValidationError as err:  # Settings() from RAG_* variables
        if err.title != "Settings":
            raise
        show_error(settings_error(err), debug)
    except Exception as err:  # anything unexpected
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(130)
        if debug:
            raise
        from rich.text import Text

        console.print(Text.assemble(("internal error: ", "red"), f"{type(err).__name__}: {err}\n"
                                    "  rerun with RAG_DEBUG=1 for details and report it"))
        sys.exit(3)


if __name__ == "__main__":
    main()
