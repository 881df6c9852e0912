"""The ``rag`` command: a thin typer layer over the library.

Each command parses options, calls one library function and prints its result
(a rich table for people, ``--json`` for programs). Errors the user can act on
(`RagError`) are printed as one line plus the fix, exit status 2; nothing prints a
stack trace unless ``RAG_DEBUG=1``. Heavy imports happen inside commands so that
``rag --help`` is instant.

The core commands live here; other packages add theirs (``ui``: serve, api, mcp; ``eval``: eval,
bench) through entry points in the ``paper_rag.commands`` group, each naming a
``register_commands(app)`` function (simonw/llm's plugin hook), loaded by `load_commands`. So the
library never imports its interfaces, and an install without them still has a working ``rag``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from rag.errors import RagError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Cited question answering over paper abstracts.")
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

COMMANDS_GROUP = "paper_rag.commands"  # entry points: NAME = "module:register_commands"
EXIT_REJECTED = 1  # ingest: some records were rejected, the rest was ingested
EXIT_FAILED = 1  # ask / chat: an answer (a turn) failed or was cut short
EXIT_ERROR = 2  # a usage error (click's status); a RagError exits with `rag.errors.outcome(err).exit_code`


def settings(**overrides: Any) -> Any:
    from rag.settings import Settings

    return Settings(**overrides)


def emit_json(data: Any, lines: bool = False) -> None:
    """``data`` as JSON on stdout: indented, or one line (JSON Lines) when ``lines``."""
    text = json.dumps(data, indent=None if lines else 2, ensure_ascii=False, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


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
    from rag.ingest import Ingestor
    from rag.ingest_summary import record_lines, summary_lines

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
    from rag.ingest import stats as index_stats

    data = index_stats(settings())
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        out.print(f"{key:>20}: {value}", markup=False, highlight=False)
    if not data["ingested"]:
        from rag.errors import EmptyIndexError

        console.print(f"nothing ingested yet: {EmptyIndexError.fix}", markup=False, highlight=False)


CLI_PARAMS = {"k": "-k", "year": "--year", "backend": "--backend", "model": "--model"}  # fields as the flags name them


def parse_filters(year: str | None, author: str | None, category: str | None) -> Any:
    """The search filters from the command's options (`rag.request.parse_filters`); a malformed ``--year``
    is an `InputError`."""
    from rag.request import parse_filters as parse

    return parse(year, author, category, param="--year")


YearOpt = Annotated[str | None, typer.Option("--year", help="Year or range: 2024, 2023..2025, 2023.., ..2020.")]
AuthorOpt = Annotated[str | None, typer.Option(
    "--author", help="Author name (substring; any case, accents optional: Scholkopf finds Schölkopf).")]
CategoryOpt = Annotated[str | None, typer.Option("--category", help="Category, e.g. cs.CL.")]
KOpt = Annotated[int | None, typer.Option("-k", min=1, help="Number of papers.")]


def choice_of(group: str, field: str) -> Any:
    """A typer callback accepting only the values of the ``Literal`` settings field ``group.field``.

    A wrong value is a usage error (exit 2) naming the accepted ones, not a failure deep inside."""
    def check(value: str | None) -> str | None:
        from typing import get_args

        from rag.settings import Settings

        model = Settings.model_fields[group].annotation
        allowed = get_args(model.model_fields[field].annotation)  # type: ignore[union-attr]
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}")
        return value
    return check


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
    from rag.request import check_k
    from rag.retrieval import Retriever

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


def print_notices(notices: list[str]) -> None:
    """What the filters left out (`rag.filters.allowed_ids`), one ``note:`` line each on stderr."""
    for notice in notices:
        console.print(f"note: {notice}", markup=False)


def print_hits(hits: list[Any]) -> None:
    """Ranked papers for people: title, id and scores, then the best snippet."""
    from rich.text import Text

    for rank, hit in enumerate(hits, 1):
        dense = f"{hit.dense:.3f}" if hit.dense is not None else "-"
        lexical = f"{hit.lexical:.2f}" if hit.lexical is not None else "-"
        bonus = f", name match +{hit.name_bonus:.3f}" if getattr(hit, "name_bonus", 0) else ""  # why a score tops 1
        out.print(Text.assemble((f"{rank}. {hit.paper.title}", "bold"), (
            f"  {hit.paper.id}  score {hit.score:.3f} (dense {dense}, bm25 {lexical}{bonus})", "dim")))
        if hit.chunks:
            out.print(Text(f"   {hit.chunks[0].text[:300]}"))


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
    from rag.retrieval import Retriever

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


papers_app = typer.Typer(help="The papers in the index: list, show, remove.", no_args_is_help=True)
app.add_typer(papers_app, name="papers")


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
    from rag.injection import instruction_sentences
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
    from rag.ingest_summary import INSTRUCTION_NOTE

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


def known_backend(value: str | None) -> str | None:
    """A typer callback accepting the backends the registry knows (an installed plug-in's included):
    a wrong name is a usage error (exit 2) naming the nearest one."""
    from rag.llm import backend_names, unknown_backend

    if value is not None and (problem := unknown_backend(value)):
        raise typer.BadParameter(f"{problem}; known: {', '.join(backend_names())}")
    return value


BackendOpt = Annotated[str | None, typer.Option(
    "--backend", help="auto, ollama, openai, llamacpp, extractive, or an installed plug-in's backend.",
    callback=known_backend)]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="A bundled model (qwen2.5-coder-1.5b, smollm2-135m), a GGUF path, or a model the "
                    "Ollama/OpenAI-compatible server serves.")]


def answer_settings(backend: str | None, model: str | None) -> Any:
    """The settings with ``--backend`` and ``--model`` in force (`rag.request.with_settings`)."""
    from rag.request import with_settings

    return with_settings(settings(), backend, model)


def stream_to_terminal(events: Any, as_json: bool, lines: bool = False, notices: Any = None,
                       backend_notes: Any = tuple) -> Any:
    """One answer on the terminal (`rag.terminal`: stage spinner, tokens, the checked answer once),
    or as JSON; ``notices`` (a `rag.notices.Notices`) says each note once per chat, ``backend_notes``
    (called after the answer) gives the backend's notes, shown only when a model ran."""
    from rag.notices import Notices
    from rag.terminal import print_answer, render_events

    answer = render_events(events, out, console, write=not as_json)
    if as_json:
        emit_json(answer.as_dict(), lines=lines)
    else:
        print_answer(answer, out, console, (notices or Notices()).fresh(answer, backend_notes()))
    return answer


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
    from rag.answer import Answerer
    from rag.chat import Conversation
    from rag.request import AskRequest
    from rag.table.terminal import table_turn

    cfg = settings()
    request = AskRequest.of(cfg, question, backend=backend, model=model, k=k, year=year, author=author,
                            category=category, params=CLI_PARAMS)
    answerer = Answerer(request.settings(cfg))
    if (made := table_turn(answerer, request.question, console, None if as_json else out, k=request.k,
                           filters=request.filters)) is not None:  # "make a table of ..."
        if as_json:
            emit_json(made.as_dict())
        return
    answer = stream_to_terminal(Conversation(answerer).respond(request), as_json,
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
    from rag.answer import Answerer
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


CHAT_COMMANDS = {"/new": "start a new conversation", "/md FILE": "write the conversation as Markdown",
                 "/bib FILE": "write the cited papers as BibTeX", "/help": "this list",
                 "/quit": "leave (or Ctrl-D)"}


def chat_help() -> str:
    return "Commands: " + "; ".join(f"{name} {what}" for name, what in CHAT_COMMANDS.items())


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
    from rich.text import Text

    from rag.answer import Answerer
    from rag.chat import Conversation
    from rag.notices import Notices
    from rag.request import AskRequest, check_k, with_settings
    from rag.table.chat import last_cited
    from rag.table.terminal import table_turn

    cfg = settings()
    check_k(cfg, k, "-k")  # a bad -k is said before the first question
    conversation = Conversation(Answerer(with_settings(cfg, backend, model)))
    notices = Notices()  # each note once in this conversation
    failed = 0
    interactive = sys.stdin.isatty()
    if interactive and not as_json:
        console.print(f"Ask about the papers. {chat_help()}", markup=False, highlight=False)
    while True:
        try:
            line = (input("\n> ") if interactive else input()).strip()
        except EOFError:
            break
        if not line:
            continue
        command, _, arg = line.partition(" ")
        if command in ("/quit", "/exit"):
            break
        if command == "/new":
            conversation.reset()
            console.print("new conversation")
        elif command in ("/md", "/bib"):
            text = conversation.to_markdown() if command == "/md" else conversation.to_bibtex()
            Path(arg or f"conversation.{command[1:]}").write_text(text, encoding="utf-8")
            console.print(Text(f"wrote {arg or f'conversation.{command[1:]}'}"))
        elif command in ("/help", "/?"):
            console.print(chat_help(), markup=False, highlight=False)
        elif re.fullmatch(r"/[A-Za-z]\w*", command):  # a mistyped command is never sent as a question
            console.print(Text.assemble(("unknown command ", "yellow"), command, f". {chat_help()}"))
        else:
            try:
                request = AskRequest.of(cfg, line, backend=backend, model=model, k=k, params=CLI_PARAMS)
                if (made := table_turn(conversation.answerer, request.question, console, None if as_json else out,
                                       last_cited(conversation), k=request.k)) is not None:  # "make a table of ..."
                    if as_json:
                        emit_json(made.as_dict(), lines=True)
                    continue
                answer = stream_to_terminal(conversation.respond(request), as_json=as_json, lines=True,
                                            notices=notices,
                                            backend_notes=lambda: conversation.answerer.backend_for()[1])
                failed += bool(answer.error)
            except RagError as err:  # a bad question must not end the conversation
                failed += 1
                if as_json:
                    emit_json({"question": line, "error": err.user_message()}, lines=True)
                else:
                    console.print(Text.assemble(("error: ", "red"), err.user_message()))
    if failed:
        if not as_json:
            console.print(f"{failed} turn{'s' if failed != 1 else ''} failed", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED)


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


def usage_error(err: Any) -> RagError:
    """A typer/click usage error (bad option value, unknown option, missing argument) as one line + fix."""
    ctx = getattr(err, "ctx", None)
    command = ctx.command_path if ctx is not None else "rag"
    return RagError(err.format_message().replace("\n", " "), f"see `{command} --help`")


def settings_error(err: Any) -> RagError:
    """A pydantic error in the settings (from RAG_* variables or a .env file) as one line + fix.

    >>> from pydantic import BaseModel, ValidationError
    >>> class Ui(BaseModel): port: int
    >>> try: Ui(port="abc")
    ... except ValidationError as e: print(settings_error(e))
    RAG_PORT='abc': Input should be a valid integer, unable to parse string as an integer
    """
    first = err.errors()[0]
    name = "RAG_" + "__".join(str(part) for part in first["loc"]).upper()
    value = "" if isinstance(first.get("input"), dict) else f"={first.get('input')!r}"  # a group: the message says
    return RagError(f"{name}{value}: {first['msg'].removeprefix('Value error, ')}",
                    f"set {name} to a valid value or unset it (see rag/settings.py for the field)")


def show_error(err: RagError, debug: bool) -> None:
    """One line (plus the fix) on stderr, then exit with the error's status (`rag.errors.outcome`: 2);
    with ``RAG_DEBUG=1`` the traceback instead."""
    if debug:
        raise err
    from rich.text import Text

    from rag.errors import outcome

    console.print(Text.assemble(("error: ", "red"), err.user_message()))
    sys.exit(outcome(err).exit_code)


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
