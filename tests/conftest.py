"""Shared fixtures: an isolated data home per test, one embedder per session, and a
session-wide index of the bundled corpus for tests that only read it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.testing import free_port, running_server, stop_process, wait_for_http  # noqa: F401  (the tests import them from here)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# bundled models assembled from their packages are kept where users keep them (1.1 GB, made once)
MODEL_DIR = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "paper-rag" / "models")
# one model-export cache per test session (rag.index.onnx_encoder), never the user's ~/.cache
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="paper-rag-test-cache-")
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
BUNDLED = ROOT / "data" / "papers.jsonl"
BIN = Path(sys.executable).parent


HEAVY_FIXTURES = {"embedder", "chroma_server"}  # a model load (every index needs it) or a server process


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``fast`` (`make test-fast`) every test that loads no model, starts no server and is not ``slow``
    or ``browser``: the pure logic, doctests included."""
    for item in items:
        if item.get_closest_marker("slow") or item.get_closest_marker("browser"):
            continue
        if item.get_closest_marker("heavy") or HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            continue
        item.add_marker(pytest.mark.fast)


@pytest.fixture(autouse=True)
def rag_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data home, like simonw/llm's user-dir fixture."""
    home = tmp_path / "rag-home"
    monkeypatch.setenv("RAG_HOME", str(home))
    for key in [k for k in os.environ if k.startswith("RAG_") and k != "RAG_HOME"]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RAG_LLM__MODEL_DIR", MODEL_DIR)
    return home


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    from rag.index.embeddings import Embedder

    return Embedder()


@pytest.fixture(scope="session")
def bundled_home(tmp_path_factory: pytest.TempPathFactory, embedder) -> Path:  # type: ignore[no-untyped-def]
    """A data home with the bundled corpus ingested once per session. Read-only by convention."""
    from rag.ingest.ingestor import Ingestor
    from rag.settings import Settings

    home = tmp_path_factory.mktemp("bundled") / "home"
    Ingestor(Settings(home=home), embedder=embedder).run([BUNDLED])
    return home


@pytest.fixture
def bundled_copy(bundled_home: Path, rag_home: Path) -> Path:
    """A private, writable copy of the bundled index at this test's RAG_HOME."""
    shutil.copytree(bundled_home, rag_home)
    return rag_home


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[str]:
    """A real `chroma run` server on a free loopback port; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "chroma"), "run", "--path", str(tmp_path / "chroma-server"), "--host", "127.0.0.1",
           "--port", str(port)]
    with running_server(cmd, url + "/api/v2/heartbeat"):
        yield url


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """`rag ARGS` in a subprocess, as a user would run it."""
    return subprocess.run([str(BIN / "rag"), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, input=input)
