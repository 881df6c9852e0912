"""Fault injection: ``kill -9`` at varied moments of ``rag papers rm``, ``rag ingest`` and
``rag ingest --rebuild``, then what the next command says and what is left (issue 23).

    python -m eval.kill9 [--runs 20] [--papers 200] [--out runs/kill9.json]

A base data home holds ``--papers`` papers (the bundled abstracts, repeated under new titles
past 184). Each run copies it, starts the real ``rag`` CLI (in a child process; vectors from
`rag.testing.HashEmbedder`, so no model load blurs the timing) and kills it with SIGKILL after a
delay spread evenly from just before the command can first write (the time ``rag stats`` takes to
start and open the index) to the end of its own uninterrupted duration (both measured first) for
odd runs; even runs wait until SQLite's rollback journal appears (a write transaction is open:
polled every millisecond) and kill 0 to 95 ms later, so kills land inside writes too. Then a
fresh process, as a user's next command would:

1. reads the index the way ``rag stats`` does, and records what it says: ``ok``, ``damaged``
   (`IndexDamagedError`: a *false* report whenever SQLite's own integrity check then passes),
   ``busy``, or another error;
2. counts the papers lost: ids that were in the index and that the killed command was not
   asked to remove, missing now;
3. runs the command again to completion (for ``papers rm``: the ids still there) and checks the
   result is exact: every paper that should be there is, once.

The commands: ``papers rm`` of a quarter of the papers; ``ingest`` of a file adding half as many
papers again and changing a tenth; ``ingest --rebuild --yes`` from all of them. Left out: the real
embedding model, a Chroma server (the kill is on the embedded store), and disks that lie about
fsync. Prints one line per run and a table; writes every run to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rag.bundled import CORPUS, bundled_file

# the CLI in a child process, with HashEmbedder vectors
RUNNER = """
import sys
import rag.ingest.ingestor, rag.search.retrieval
from rag.testing import HashEmbedder
rag.ingest.ingestor.Embedder = lambda settings=None: HashEmbedder(settings)
rag.search.retrieval.Embedder = lambda settings=None: HashEmbedder(settings)
import rag.cli
sys.argv = ["rag", *sys.argv[1:]]
rag.cli.main()
"""

# what the next command sees: as `rag stats` reads the index, then the ids
CHECK = """
import json, sqlite3, sys
from rag.errors import IndexBusyError, IndexDamagedError, RagError
from rag.ingest.ingestor import stats
from rag.settings import Settings
settings = Settings()
db = settings.chroma_dir / "chroma.sqlite3"
journal = db.with_name("chroma.sqlite3-journal").exists()
try:
    stats(settings)
    said = "ok"
except IndexDamagedError as err:
    said = "damaged: " + str(err)
except IndexBusyError as err:
    said = "busy: " + str(err)
except RagError as err:
    said = "error: " + str(err)
except Exception as err:
    said = f"internal error: {type(err).__name__}: {err}"
integrity = None
try:
    con = sqlite3.connect(db)
    integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    con.close()
except Exception as err:
    integrity = f"{type(err).__name__}: {err}"
ids = []
if said == "ok":
    from rag.library import catalogue
    ids = sorted(catalogue(settings).papers)
print(json.dumps({"said": said, "journal": journal, "integrity": integrity, "ids": ids}))
"""


def papers(n: int, start: int = 0, changed: bool = False) -> list[dict[str, Any]]:
    base = [json.loads(line) for line in bundled_file(CORPUS).read_text(encoding="utf-8").splitlines()]
    out = []
    for i in range(start, start + n):
        record = dict(base[i % len(base)])
        if i >= len(base):
            record["title"] = f"{record['title']} (copy {i // len(base)})"
        record.pop("id", None)
        if changed:
            record["abstract"] = record["abstract"] + " We also report a changed result."
        out.append(record)
    return out


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def env(home: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return {**clean, "RAG_HOME": str(home), "HF_HUB_OFFLINE": "1"}


def rag(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", RUNNER, *args], env=env(home), capture_output=True, text=True,
                          timeout=timeout)


def check(home: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", CHECK], env=env(home), capture_output=True, text=True, timeout=600)
    try:
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"said": f"checker failed: {done.stderr.strip()[-300:]}", "ids": [], "journal": None,
                "integrity": None}


def ids_of(home: Path) -> list[str]:
    return list(check(home)["ids"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--papers", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="paper-rag-kill9-"))
    n = args.papers
    base_file = write(work / "base.jsonl", papers(n))
    more_file = write(work / "more.jsonl", papers(n // 2, start=n) + papers(n // 10, changed=True))
    all_file = write(work / "all.jsonl", papers(n) + papers(n // 2, start=n))
    base = work / "base-home"
    assert rag(base, "ingest", str(base_file)).returncode == 0
    base_ids = ids_of(base)
    assert len(base_ids) == n, len(base_ids)
    removed = base_ids[::4]  # a quarter of the papers
    final_ids = sorted(set(base_ids) | set(ids_of_file(work, all_file)))

    commands = {"papers rm": ["papers", "rm", *removed], "ingest": ["ingest", str(more_file)],
                "ingest --rebuild": ["ingest", "--rebuild", "--yes", str(all_file)]}
    results: list[dict[str, Any]] = []
    for name, cmd in commands.items():
        probe = work / "probe"
        shutil.rmtree(probe, ignore_errors=True)
        shutil.copytree(base, probe)
        start = time.monotonic()
        assert rag(probe, "stats").returncode == 0
        opened = time.monotonic() - start  # starting Python and opening the index: no write before this
        start = time.monotonic()
        done = rag(probe, *cmd)
        duration = time.monotonic() - start
        assert done.returncode == 0, done.stderr
        print(f"{name}: {duration:.1f}s uninterrupted ({opened:.1f}s to start and open the index)", flush=True)
        for run in range(args.runs):
            home = work / f"run-{name.replace(' ', '_')}-{run}"
            shutil.copytree(base, home)
            child = subprocess.Popen([sys.executable, "-c", RUNNER, *cmd], env=env(home),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            start = time.monotonic()
            if run % 2:  # by the clock: spread over the whole command
                delay = 0.8 * opened + (duration - 0.8 * opened) * (run // 2) / max(1, args.runs // 2 - 1)
                time.sleep(delay)
            else:  # inside a write: once SQLite's journal appears, 0 to 95 ms later
                wait_for_journal(home, child, timeout=duration * 3)
                time.sleep(0.005 * (run // 2) * 20 / max(1, args.runs))
                delay = time.monotonic() - start
            killed = child.poll() is None
            if killed:
                os.kill(child.pid, signal.SIGKILL)
            child.wait()
            seen = check(home)
            protected = set(base_ids) - (set(removed) if name == "papers rm" else set())
            after_kill = set(seen["ids"])
            lost_now = sorted(protected - after_kill) if seen["said"] == "ok" else None
            # recover the way a user would: run the command again
            again = cmd if name != "papers rm" else ["papers", "rm", *sorted(set(removed) & after_kill)]
            if name == "papers rm" and not set(removed) & after_kill:
                again = []
            rerun = rag(home, *again) if again else None
            final = set(ids_of(home))
            want = set(base_ids) - set(removed) if name == "papers rm" else set(final_ids)
            result = {"command": name, "run": run, "timing": "clock" if run % 2 else "in a write",
                      "delay_s": round(delay, 3), "killed": killed,
                      "said": seen["said"][:200], "journal_left": seen["journal"], "integrity": seen["integrity"],
                      "false_damaged": seen["said"].startswith("damaged") and seen["integrity"] == "ok",
                      "lost_after_kill": None if lost_now is None else len(lost_now),
                      "rerun_code": None if rerun is None else rerun.returncode,
                      "lost_after_rerun": len(want - final), "extra_after_rerun": len(final - want)}
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "integrity"}), flush=True)
            shutil.rmtree(home, ignore_errors=True)
    print("\ncommand            runs  killed  journal left  said ok  false damaged  other errors  "
          "lost after kill  lost after rerun")
    for name in commands:
        rows = [r for r in results if r["command"] == name]
        print(f"{name:<18} {len(rows):>4}  {sum(r['killed'] for r in rows):>6}  "
              f"{sum(bool(r['journal_left']) for r in rows):>12}  {sum(r['said'] == 'ok' for r in rows):>7}  "
              f"{sum(r['false_damaged'] for r in rows):>13}  "
              f"{sum(r['said'] != 'ok' and not r['false_damaged'] for r in rows):>12}  "
              f"{sum(r['lost_after_kill'] or 0 for r in rows):>15}  {sum(r['lost_after_rerun'] for r in rows):>16}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)


def wait_for_journal(home: Path, child: subprocess.Popen[bytes], timeout: float) -> None:
    """Return once the child's write transaction has a rollback journal (or it exited, or ``timeout``)."""
    journal = home / "chroma" / "chroma.sqlite3-journal"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None and not journal.exists():
        time.sleep(0.001)


def ids_of_file(work: Path, path: Path) -> list[str]:
    from rag.index.loaders import load_paths

    return sorted(load_paths([path]).papers)


if __name__ == "__main__":
    main()
