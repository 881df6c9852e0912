"""A backend from another package: tests/plugins/paper_rag_echo, installed with pip into a temporary
folder (never into the environment), adds the backend ``echo`` through the ``paper_rag.backends``
entry-point group, as simonw/llm's tests install a plugin. It answers through the CLI, the API, the
web chat and MCP; its settings name is validated like a built-in's; a broken plug-in is one error
naming it and its package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rag.errors import BackendUnavailableError
from rag.settings import LLMSettings, Settings

from .conftest import BIN, run_cli

PLUGIN = Path(__file__).parent / "plugins" / "paper_rag_echo"
SKYWORK_Q = "How many parameters does Skywork-MoE have?"
SKYWORK_ID = "title:7a92a17d60b241af"


@pytest.fixture(scope="module")
def echo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the installed plug-in (its module and its .dist-info with the entry points)."""
    root = tmp_path_factory.mktemp("echo")
    source, site = root / "source", root / "site"
    shutil.copytree(PLUGIN, source)  # the build leaves its build/ and .egg-info there, not in tests/
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(source)], check=True, capture_output=True, timeout=300)
    return site


@pytest.fixture
def echo(echo_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plug-in installed for this process and the commands it starts (PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(echo_site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(echo_site), os.environ.get("PYTHONPATH")])))
    return echo_site


def check_echoed(answer: dict[str, Any]) -> None:
    """The echo backend's answer, checked by paper-rag: the Skywork-MoE abstract's first sentence, cited and
    supported (the CLI's JSON marks its sentences, the API's and MCP's their citations)."""
    assert answer["backend"] == "echo" and answer["model"] == "echo-1", answer
    assert "146 billion parameters" in answer["answer"] and answer["answer"].rstrip().endswith("[1].")
    assert answer["citations"][0]["paper_id"] == SKYWORK_ID
    assert answer["citations"][0].get("supported", True) and all(s["supported"] for s in answer.get("sentences", []))


def test_the_plugin_is_a_backend_only_once_installed(echo_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.llm import backend_names, make_backend

    assert "echo" not in backend_names()
    with pytest.raises(ValueError, match="unknown LLM backend 'echo'"):
        LLMSettings(backend="echo")
    monkeypatch.syspath_prepend(str(echo_site))
    assert backend_names()[-2:] == ("broken", "echo")
    assert Settings(llm={"backend": "echo"}).llm.backend == "echo"
    backend = make_backend("echo", LLMSettings(max_new_tokens=100))
    assert backend.describe() == "the echo plug-in (quotes its first source)" and backend.prompt_budget == 3996
    with pytest.raises(ValueError, match=r"unknown LLM backend 'ecko' \(did you mean 'echo'\?\)"):
        LLMSettings(backend="ecko")


def test_a_broken_plugin_is_one_error_naming_it_and_its_package(echo: Path) -> None:
    from rag.llm import make_backend, select_backend

    with pytest.raises(BackendUnavailableError) as info:
        select_backend(LLMSettings(backend="broken"))
    assert str(info.value).startswith("backend plug-in 'broken' (paper_rag_echo_missing:Backend, from paper-rag-echo) "
                                      "failed to load: ModuleNotFoundError")
    assert "paper-rag-echo" in info.value.fix
    assert make_backend("echo", LLMSettings()).name == "echo"  # the other plug-in of the package still loads


def test_the_plugin_answers_through_the_cli(echo: Path, bundled_copy: Path) -> None:
    proc = run_cli("ask", "--backend", "echo", "--json", SKYWORK_Q)
    assert proc.returncode == 0, proc.stderr
    check_echoed(json.loads(proc.stdout))
    wrong = run_cli("ask", "--backend", "ecko", SKYWORK_Q)
    assert wrong.returncode == 2 and "did you mean 'echo'" in wrong.stderr


def test_the_plugin_answers_through_the_api_and_the_web_chat(echo: Path, bundled_copy: Path, embedder: Any) -> None:
    from fastapi.testclient import TestClient

    from rag.answer.answerer import Answerer
    from ui.api import create_app
    from ui.app import WebApp

    cfg = Settings(home=bundled_copy, llm={"backend": "extractive"})
    http = TestClient(create_app(cfg, answerer=Answerer(cfg, embedder=embedder)))
    assert "echo" in [m["id"] for m in http.get("/v1/models").json()["data"]]
    question = {"model": "echo", "messages": [{"role": "user", "content": SKYWORK_Q}]}
    reply = http.post("/v1/chat/completions", json=question)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["citations"][0]["paper_id"] == SKYWORK_ID and body["citations"][0]["supported"] is True
    assert "146 billion parameters and 16 experts [1]." in body["choices"][0]["message"]["content"]

    web = WebApp(cfg, embedder=embedder)
    session = list(web.ask(SKYWORK_Q, None, backend="echo"))[-1][-1]
    assert "answered by echo" in session.messages[-1]["content"]


def test_the_plugin_answers_through_mcp(echo: Path, bundled_home: Path) -> None:
    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    env = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "XDG_", "PYTHONPATH"))}
    env |= {"RAG_HOME": str(bundled_home), "RAG_LLM__BACKEND": "echo"}
    answers: list[dict[str, Any]] = []

    async def main() -> None:
        async with Client(StdioServerParameters(command=str(BIN / "rag"), args=["mcp"], env=env),
                          read_timeout_seconds=120) as client:
            result = await client.call_tool("ask", {"question": SKYWORK_Q})
            assert not result.is_error, result
            answers.append(result.structured_content)

    anyio.run(main)
    check_echoed(answers[0])

