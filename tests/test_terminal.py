"""``rag ask`` / ``rag chat`` on a terminal (`rag.terminal`, `rag.cli`): the stage spinner on stderr,
each answer printed once (the checked text replaces what streamed), the notes once and only when a
model ran, the chat's exit status and its local commands.

Rendering is checked on rich consoles that claim a terminal (escape codes recorded); the commands
run as a user runs them, piped, against the Ollama stand-in or the extractive backend.
"""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from rag.answer.answer_result import Answer, Event
from rag.ingest.ingestor import Ingestor
from rag.notices import Notices
from rag.settings import Settings
from rag.terminal import render_events
from tests.conftest import FIXTURES, free_port, run_cli
from tests.ollama_standin import OllamaStandIn

QUESTION = "How much faster is ZQRT?"


@pytest.fixture
def index(embedder) -> Settings:  # type: ignore[no-untyped-def]
    settings = Settings()
    Ingestor(settings, embedder=embedder).run([FIXTURES / "hybrid.jsonl"])
    return settings


def consoles(width: int = 40) -> tuple[Console, io.StringIO, Console, io.StringIO]:
    out_file, err_file = io.StringIO(), io.StringIO()
    out = Console(file=out_file, force_terminal=True, width=width, color_system=None)
    err = Console(file=err_file, force_terminal=True, width=width, color_system=None)
    return out, out_file, err, err_file


def test_stages_spin_on_stderr_and_the_checked_answer_replaces_what_streamed() -> None:
    streamed = "ZQRT is fast [1]. Bananas grow on the moon [1]. " * 2  # 96 characters: 3 rows of 40
    checked = Answer("q", "q", answer="ZQRT is fast [1].")
    events = [Event("stage", "searching the papers"), Event("stage", "reading 3 papers"),
              Event("progress", "an event kind this printer does not know"), Event("stage", "writing the answer"),
              *(Event("token", word) for word in re.findall(r"\S+\s*", streamed)),
              Event("stage", "checking the answer: 1 of 4 sentences"), Event("done", answer=checked)]
    out, out_file, err, err_file = consoles()
    assert render_events(events, out, err) is checked
    spinner = err_file.getvalue()
    assert "writing the answer · 0 s" in spinner  # the stage current when it refreshed, with the seconds
    assert "checking the answer: 1 of 4 sentences" in spinner and "\x1b[2K" in spinner  # erased when done
    text = out_file.getvalue()
    assert text.startswith(streamed.strip()[:20]) and "\r\x1b[3A\x1b[J" in text  # 3 rows up, then cleared
    assert text.split("\x1b[J", 1)[1].strip() == "ZQRT is fast [1]."  # what is left on screen: the answer once


def test_a_pipe_gets_the_checked_answer_alone_and_no_spinner() -> None:
    out_file, err_file = io.StringIO(), io.StringIO()
    out, err = Console(file=out_file, width=80), Console(file=err_file, width=80)
    answer = Answer("q", "q", answer="ZQRT is fast [1].")
    render_events([Event("stage", "searching the papers"), Event("token", "ZQRT is quick [1]."),
                   Event("done", answer=answer)], out, err)
    assert out_file.getvalue() == "ZQRT is fast [1].\n" and err_file.getvalue() == ""


def test_backend_notes_once_and_only_when_a_model_ran() -> None:
    backend = ["Ollama not reachable at http://x: using bundled Qwen"]
    abstained = Answer("q", "q", abstained=True, notes=[*backend, "2 of 9 papers have no year"])
    answered = Answer("q", "q", answer="A [1].", generated="A [1].", notes=[*backend])
    notices = Notices()
    assert notices.fresh(abstained, backend) == ["2 of 9 papers have no year"]
    assert notices.fresh(answered, backend) == backend
    assert notices.fresh(answered, backend) == []


def test_chat_prints_each_answer_once_with_its_marks(index: Settings) -> None:
    reply = "ZQRT runs three times faster than dense attention [1]. Bananas grow on the moon in winter [1]."
    with OllamaStandIn(reply=reply) as server:
        env = {"RAG_LLM__BACKEND": "ollama", "RAG_LLM__OLLAMA_URL": server.url}
        result = run_cli("chat", input=f"{QUESTION}\n", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Bananas grow on the moon") == 1 and "[unsupported]" in result.stdout
    assert "checked answer" not in result.stdout


def test_chat_exits_non_zero_when_a_turn_failed(index: Settings) -> None:
    env = {"RAG_LLM__BACKEND": "ollama", "RAG_LLM__OLLAMA_URL": f"http://127.0.0.1:{free_port()}"}
    result = run_cli("chat", input=f"{QUESTION}\n{QUESTION}\n", env=env)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Ollama not reachable" in result.stderr and "2 turns failed" in result.stderr
    good = run_cli("chat", "--backend", "extractive", input=f"{QUESTION}\n")
    assert good.returncode == 0, good.stderr


def test_chat_answers_help_and_unknown_commands_itself(index: Settings) -> None:
    result = run_cli("chat", "--backend", "extractive", "--json", input=f"/help\n/foo bar\n{QUESTION}\n/quit\n")
    assert result.returncode == 0, result.stderr
    turns = [json.loads(line) for line in result.stdout.splitlines()]
    assert [t["question"] for t in turns] == [QUESTION]  # neither command was asked as a question
    assert "/md FILE" in result.stderr and "unknown command /foo" in result.stderr
