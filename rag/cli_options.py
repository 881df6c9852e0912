"""The options several ``rag`` commands take, checked where typer parses them: the filters
(``--year``, ``--author``, ``--category``), ``-k``, ``--backend``, ``--model``, a settings field's
choices (`choice_of`); the settings they start from (`settings`, `answer_settings`) and the flags'
names for a request's fields (`CLI_PARAMS`, so an error names ``--year``, not ``year``).

Left out: the commands (`rag.cli`), where they write (`rag.cli_output`).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer


def settings(**overrides: Any) -> Any:
    from rag.settings import Settings

    return Settings(**overrides)


CLI_PARAMS = {"k": "-k", "year": "--year", "backend": "--backend", "model": "--model"}  # fields as the flags name them


def parse_filters(year: str | None, author: str | None, category: str | None) -> Any:
    """The search filters from the command's options (`rag.answer.request.parse_filters`); a malformed ``--year``
    is an `InputError`."""
    from rag.answer.request import parse_filters as parse

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
    """The settings with ``--backend`` and ``--model`` in force (`rag.answer.request.with_settings`)."""
    from rag.answer.request import with_settings

    return with_settings(settings(), backend, model)


__all__ = ["CLI_PARAMS", "AuthorOpt", "BackendOpt", "CategoryOpt", "KOpt", "ModelOpt", "YearOpt", "answer_settings",
           "choice_of", "known_backend", "parse_filters", "settings"]
