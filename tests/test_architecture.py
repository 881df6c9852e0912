"""The layers hold: import-linter's contracts (pyproject.toml), and ui/eval commands arriving by entry point;
the types check (mypy).

Fast: no model, no index (mypy, a minute or two without its cache, is left out of `make test-fast`).
"""

from __future__ import annotations

import importlib.metadata
import subprocess

import pytest
import typer

from .conftest import BIN, ROOT


def test_import_contracts_are_kept() -> None:
    """`lint-imports`: ui and eval above rag and independent, the read path free of ingest, no cycles."""
    proc = subprocess.run([str(BIN / "lint-imports")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.heavy
def test_types_check() -> None:
    """`mypy` ([tool.mypy] in pyproject.toml: rag, ui, eval) finds no error and no `type: ignore` it does not need."""
    proc = subprocess.run([str(BIN / "mypy")], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("Success: no issues found")


def test_rag_help_lists_the_commands_ui_and_eval_register() -> None:
    proc = subprocess.run([str(BIN / "rag"), "--help"], capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "200", "PATH": str(BIN)})
    assert proc.returncode == 0, proc.stderr
    for command in ("ingest", "ask", "papers", "eval", "bench", "serve", "api", "mcp"):
        assert f" {command} " in proc.stdout, command
    assert "warning" not in proc.stderr


def test_a_broken_plugin_is_reported_and_the_others_still_load(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import rag.cli

    group = rag.cli.COMMANDS_GROUP
    points = [importlib.metadata.EntryPoint("broken", "no_such_module_xyz:register_commands", group),
              importlib.metadata.EntryPoint("ui", "ui.cli:register_commands", group)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [p for p in points if p.group == group])
    app = typer.Typer()
    assert rag.cli.load_commands(app) == ["ui"]
    assert rag.cli.load_commands(app) == []  # once per app
    assert "the broken commands" in capsys.readouterr().err
    names = {c.callback.__name__ for c in app.registered_commands if c.callback}
    assert names == {"serve", "api", "mcp"}
