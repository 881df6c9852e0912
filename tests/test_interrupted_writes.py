"""What is *not* damage: a write killed half-way (a hot SQLite journal), a lock held by another
ingest, a read-only home and a full disk each get their own message and keep the index; only
data that cannot be read is called damaged. And ``rag ingest --rebuild`` from files that hold
fewer papers than the index says how many it drops and needs ``--yes``.

The killed write is made deterministic: a child process holds a write transaction on the home's
``chroma.sqlite3`` (pages spilled to the file, the journal holding the old ones) and is killed
with SIGKILL, which is what ``kill -9`` during ``rag papers rm`` or an ingest leaves. Vectors come
from `rag.testing.HashEmbedder` (no model), for the CLI too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import rag.index.store_errors
import rag.ingest.ingestor
import rag.search.retrieval
from rag.index.index_health import JOURNAL, local_index_problem
from rag.settings import Settings
from rag.testing import HashEmbedder

from .conftest import BUNDLED
from .test_faults_store import CliResult, _mount, cli_in_process, forget_chroma, mounts  # noqa: F401  (mounts: a fixture)

RECORDS = [json.loads(line) for line in BUNDLED.read_text().splitlines()]


def corpus(path: Path, n: int, start: int = 0) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[start:start + n]))
    return path


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``rag ARGS`` in this process, every embedder a `HashEmbedder`."""
    import rag.cli

    monkeypatch.setattr(rag.ingest.ingestor, "Embedder", lambda settings=None: HashEmbedder(settings))
    monkeypatch.setattr(rag.search.retrieval, "Embedder", lambda settings=None: HashEmbedder(settings))
    return cli_in_process(monkeypatch, capsys)


@pytest.fixture
def home30(rag_home: Path, tmp_path: Path, cli: Callable[..., CliResult]) -> Settings:
    """This test's home holding the first 30 bundled papers."""
    assert cli("ingest", str(corpus(tmp_path / "first30.jsonl", 30))).code == 0
    forget_chroma(rag_home)
    return Settings()


def kill_during_write(settings: Settings) -> None:
    """Leave what a writer killed with SIGKILL mid-transaction leaves: a hot journal."""
    db = settings.chroma_dir / "chroma.sqlite3"
    child = subprocess.Popen([sys.executable, "-c", f"""
import sqlite3, time
con = sqlite3.connect({str(db)!r}, isolation_level=None)
con.execute("PRAGMA cache_size=1")  # spill the changed pages into the file before the commit
con.execute("BEGIN IMMEDIATE")
con.execute("UPDATE embedding_metadata SET string_value = string_value || 'x' WHERE string_value IS NOT NULL")
con.execute("DELETE FROM embeddings")
print("held", flush=True)
time.sleep(120)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert (settings.chroma_dir / JOURNAL).is_file()
    problem = local_index_problem(settings)
    assert problem is not None and problem.journal, problem  # what the old check called damage


def papers(settings: Settings) -> int:
    con = sqlite3.connect(f"file:{settings.chroma_dir / 'chroma.sqlite3'}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM embeddings").fetchone()[0])
    finally:
        con.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("first", ["stats", "search", "ingest", "papers rm", "ingest --rebuild"])
def test_a_killed_write_is_rolled_back_not_called_damage(first: str, home30: Settings, tmp_path: Path,
                                                        cli: Callable[..., CliResult],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    chunks = papers(home30)
    kill_during_write(home30)
    args = {"stats": ["stats", "--json"], "search": ["search", RECORDS[3]["title"], "--json"],
            "ingest": ["ingest", str(corpus(tmp_path / "next5.jsonl", 5, start=30))],
            "papers rm": ["papers", "rm", "title:" + "0" * 16],  # an id that is not there: exit 2, nothing removed
            "ingest --rebuild": ["ingest", "--rebuild", str(tmp_path / "first30.jsonl")]}[first]
    result = cli(*args)
    assert "damaged" not in result.err and "another ingest" not in result.err, result
    assert "an interrupted write was rolled back" in caplog.text, result  # a warning on stderr in a terminal
    assert result.code == (2 if first == "papers rm" else 0) and result.clean(), result
    assert not (home30.chroma_dir / JOURNAL).exists()
    con = sqlite3.connect(home30.chroma_dir / "chroma.sqlite3")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    assert papers(home30) >= chunks  # nothing the killed transaction deleted is lost
    stats = cli("stats", "--json")
    assert stats.code == 0 and json.loads(stats.out)["papers"] == (35 if first == "ingest" else 30), stats


@pytest.mark.timeout(120)
def test_a_killed_write_while_another_ingest_holds_the_lock_is_busy_not_damage(
        home30: Settings, cli: Callable[..., CliResult]) -> None:
    kill_during_write(home30)
    holder = subprocess.Popen([sys.executable, "-c", f"""
from filelock import FileLock
import time
lock = FileLock({str(home30.lock_path)!r}); lock.acquire(); print("locked", flush=True); time.sleep(120)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = cli("stats")
        assert result.code == 2 and result.clean(), result
        assert "damaged" not in result.err and "--rebuild" not in result.err and "try again" in result.err, result
    finally:
        holder.kill()
        holder.wait()
    assert cli("stats").code == 0  # the lock is free: rolled back now


@pytest.mark.timeout(120)
def test_a_killed_write_in_a_read_only_home_is_not_damage(home30: Settings, cli: Callable[..., CliResult],
                                                          mounts: Callable[..., None]) -> None:  # noqa: F811
    kill_during_write(home30)
    home = str(home30.home)
    mounts("--bind", home, home)
    mounts("-o", "remount,bind,ro", home)
    result = cli("stats")
    assert result.code == 2 and result.clean(), result
    assert "damaged" not in result.err and "--rebuild" not in result.err, result
    assert "interrupted write" in result.err and "writable" in result.err, result
    subprocess.run(["umount", home], check=True)
    forget_chroma(home30.home)
    assert cli("stats").code == 0 and not (home30.chroma_dir / JOURNAL).exists()


@pytest.mark.timeout(120)
def test_real_damage_is_still_damage(home30: Settings, cli: Callable[..., CliResult]) -> None:
    kill_during_write(home30)
    (home30.chroma_dir / "chroma.sqlite3").write_bytes(b"garbage" * 100)
    result = cli("stats")
    assert result.code == 2 and "damaged" in result.err and "--rebuild" in result.err, result


@pytest.mark.timeout(120)
def test_rebuild_from_fewer_papers_names_the_loss_and_needs_yes(home30: Settings, tmp_path: Path,
                                                               cli: Callable[..., CliResult]) -> None:
    ten = corpus(tmp_path / "ten.jsonl", 10)
    result = cli("ingest", "--rebuild", str(ten))
    assert result.code == 2 and result.clean(), result
    assert "would drop 20 of the 30 papers" in result.err and "--yes" in result.err, result
    assert json.loads(cli("stats", "--json").out)["papers"] == 30  # nothing changed
    result = cli("ingest", "--rebuild", "--yes", str(ten))
    assert result.code == 0, result
    assert json.loads(cli("stats", "--json").out)["papers"] == 10


@pytest.fixture
def small_disk(rag_home: Path, mounts: Callable[..., None]) -> Iterator[Path]:  # noqa: F811
    rag_home.mkdir()
    mounts("-t", "tmpfs", "-o", "size=6m", "tmpfs", str(rag_home))
    yield rag_home
    forget_chroma(rag_home)  # before the tmpfs goes


@pytest.mark.timeout(180)
def test_a_full_disk_says_so_and_keeps_the_index(small_disk: Path, tmp_path: Path,
                                                 cli: Callable[..., CliResult]) -> None:
    """2,000 one-chunk papers fill 6 MB during Chroma's compaction ("Error in compaction: Failed to
    apply logs to the metadata segment"): that is a full disk, not damage, and after more room a
    plain re-run finishes."""
    assert cli("ingest", str(corpus(tmp_path / "first30.jsonl", 30))).code == 0
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"title": f"{RECORDS[i % len(RECORDS)]['title']} (v{i})",
                                       "abstract": RECORDS[i % len(RECORDS)]["abstract"][:300]}) + "\n"
                           for i in range(2000)))
    result = cli("ingest", str(big))
    assert result.code == 2 and result.clean(), result
    assert "damaged" not in result.err and "--rebuild" not in result.err, result
    assert f"no space left to write the index in {small_disk}" in result.err and "needed" in result.err, result
    for args in (["stats"], ["search", RECORDS[3]["title"]]):
        result = cli(*args)
        assert result.clean() and "damaged" not in result.err, (args, result)
        assert result.code == 0 or "no space left" in result.err, (args, result)
    _mount("-o", "remount,size=64m", str(small_disk))
    forget_chroma(small_disk)
    assert cli("ingest", str(big)).code == 0
    assert json.loads(cli("stats", "--json").out)["papers"] == 2030  # the first 30 kept, the rest finished


def test_space_check_names_free_and_needed(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    free, needed = rag.index.store_errors.short_of_space(settings, always=True) or (0, 0)
    assert needed >= rag.index.store_errors.MIN_FREE_BYTES and free == shutil.disk_usage(tmp_path).free
