"""A ``rag`` command that fails, as one line plus its fix on stderr: a usage error (`usage_error`),
a bad ``RAG_*`` setting (`settings_error`), any `rag.errors.RagError` (`show_error`, which exits
with the error's status; ``RAG_DEBUG=1`` raises it instead, for the traceback).

Left out: which errors a command catches (`rag.cli.main`), the status table (`rag.errors.OUTCOMES`).
"""

from __future__ import annotations

import sys
from typing import Any

from rag.cli_output import console
from rag.errors import RagError


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


__all__ = ["settings_error", "show_error", "usage_error"]
