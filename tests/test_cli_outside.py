"""The `rag` command from the outside: text that looks like rich markup, user mistakes that
must end in one line and exit 2 (never "internal error"), and a taken port for `rag serve`.

Each test runs the real command in a subprocess, as a user would."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from .conftest import run_cli

BRACKETED = [
    {"title": "Prompting with [INST] tags [/INST] in instruction tuning",
     "abstract": "We wrap every prompt in [INST] ... [/INST] and study the [CLS] token of encoders."},
    {"title": "An array [a-z] regex for tokenizers",
     "abstract": "The pattern [a-z] matches lower case letters; [CLS] and [MASK] are special tokens [7]."},
    {"title": "Closing tags [/oops] in abstracts",
     "abstract": "A closing tag [/oops] without an opening one, and [bold]bold[/bold] that is not markup."},
]
REJECTED = {"title": "Rejected [/oops] record", "abstract": ""}


@pytest.fixture
def bracket_corpus(tmp_path: Path) -> Path:
    """Three papers full of brackets and one rejected record, in a file whose name has brackets."""
    path = tmp_path / "papers [v2] [bold].jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*BRACKETED, REJECTED]), encoding="utf-8")
    return path


@pytest.mark.heavy
def test_brackets_in_paper_text_pass_through_every_command(bracket_corpus: Path, tmp_path: Path) -> None:
    home = {"RAG_HOME": str(tmp_path / "home [red]")}
    ingest = run_cli("ingest", str(bracket_corpus), env=home)
    assert ingest.returncode == 1, ingest.stderr  # the record without an abstract is rejected
    assert "Rejected [/oops] record" in ingest.stderr and "[v2] [bold].jsonl:4" in ingest.stderr
    assert "home [red]" in ingest.stdout and "3 new" in ingest.stdout
    again = run_cli("ingest", str(bracket_corpus), env=home)  # a re-run must not die on the same record
    assert again.returncode == 1 and "Rejected [/oops] record" in again.stderr and "3 unchanged" in again.stdout

    stats = run_cli("stats", env=home)
    assert stats.returncode == 0 and "home [red]" in stats.stdout, stats.stderr

    search = run_cli("search", "array [a-z] regex", env=home)
    assert search.returncode == 0, search.stderr
    assert "An array [a-z] regex for tokenizers" in search.stdout and "[CLS] and [MASK]" in search.stdout

    ask = run_cli("ask", "What do [INST] tags [/INST] wrap?", "--backend", "extractive", env=home)
    assert ask.returncode == 0, ask.stderr
    assert "Prompting with [INST] tags [/INST] in instruction tuning" in ask.stdout

    chat = run_cli("chat", "--backend", "extractive", input="Which closing tags [/oops] appear?\n", env=home)
    assert chat.returncode == 0, chat.stderr
    assert "Closing tags [/oops] in abstracts" in chat.stdout
    for result in (ingest, again, stats, search, ask, chat):
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr


@pytest.mark.parametrize("args, env, says", [
    (["search", "x", "--year", "20x4"], {}, "2020..2024"),
    (["search", "x", "--year", "2020-2024"], {}, "2020.."),
    (["search", "x", "--year", "2025..2020"], {}, "give the earlier year first: 2020..2025"),
    (["papers", "list", "--year", "2025..2020"], {}, "2020..2025"),
    (["ask", "x", "--year", "2025..2020"], {}, "2020..2025"),
    (["search", "--bogus", "x"], {}, "--bogus"),
    (["search"], {}, "query"),
    (["ingest"], {}, "paths"),
    (["eval", "run", "dev", "--workers", "0"], {}, "--workers"),
    (["serve", "--port", "abc"], {}, "--port"),
    (["serve", "--port", "70000"], {}, "RAG_UI__PORT"),
    (["stats"], {"RAG_UI__PORT": "abc"}, "RAG_UI__PORT='abc'"),
    (["stats"], {"RAG_RETRIEVAL__K": "0"}, "RAG_RETRIEVAL__K"),
    (["search", "x", "-k", "0"], {}, "-k"),
    (["search", "x", "--fusion", "bogus"], {}, "rrf, weighted, dense, lexical"),
    (["ask", "x", "--backend", "bogus"], {}, "extractive"),
    (["eval", "retrieval", "--dataset", "/no/such.jsonl"], {}, "does not exist"),
])
def test_user_mistakes_are_one_line_and_exit_2(args: list[str], env: dict[str, str], says: str) -> None:
    result = run_cli(*args, env=env, timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.startswith("error: ") and says in result.stderr and "fix: " in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # the problem, then the fix


@pytest.mark.heavy
def test_second_serve_on_a_taken_port_says_so_before_announcing_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), timeout=120)
    assert result.returncode == 2, result.stderr
    assert "in use" in result.stderr and "--port" in result.stderr and "RAG_UI__PORT" in result.stderr
    assert "web chat:" not in result.stdout and "internal error" not in result.stderr
