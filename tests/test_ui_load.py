"""Twenty simultaneous two-turn conversations against a running `rag serve` (extractive backend),
each driven by its own ``gradio_client.Client`` (its own Gradio session) on its own thread.

The index is a copy of the bundled corpus plus twenty made-up papers with distinct names
and facts, so each conversation is about a paper nobody else asks about: turn one names
the paper, turn two is a follow-up ("it") that the conversation must condense with its
*own* history. Checked: no errors, every answer cites its own paper, every session's chat
holds exactly its own four messages, and the whole run fits the time bound. Median and
p95 answer times are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_ui_browser import running_app

SESSIONS = 20
BOUND_S = 240.0
NAMES = ["Quillon", "Brambex", "Corvato", "Dunmere", "Elastro", "Fennick", "Gorvane", "Hollix", "Ivorette",
         "Jaspine", "Kestrel-9", "Lumavex", "Morrow", "Nettlo", "Orbisk", "Pellucid", "Quorrel", "Rumbleaf",
         "Sablewick", "Tundrix"]
DOMAINS = ["kelp forest imagery", "violin bow acoustics", "glacier crevasse maps", "beehive humidity logs",
           "tram timetable text", "sourdough starter spectra", "lighthouse lamp telemetry", "moth wing patterns",
           "subway tile mosaics", "kite string tension", "desert dune ripples", "origami crease graphs",
           "harbour crane schedules", "pumpkin growth curves", "tea leaf fermentation", "snowflake lattices",
           "canal lock sensors", "bonsai pruning notes", "cathedral bell chimes", "meteor shower counts"]


def paper(i: int) -> dict[str, str]:
    name, domain = NAMES[i], DOMAINS[i]
    return {"title": f"{name}: Learning from {domain.title()}",
            "abstract": f"{name} is a model that learns representations of {domain}. "
                        f"{name} reduces reconstruction error by {11 + i} percent on the {name}Bench suite. "
                        f"We trained {name} on {2 + i} graphics cards for {3 + i} days. "
                        f"The {domain} corpus we release contains {1000 + 37 * i} annotated samples."}


def questions(i: int) -> tuple[str, str]:
    name, domain = NAMES[i], DOMAINS[i]
    return (f"What does {name} learn from {domain}?", "How many graphics cards was it trained on?")


@pytest.fixture(scope="module")
def server(bundled_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("ui-load")
    home = base / "home"
    shutil.copytree(bundled_home, home)
    corpus = base / "made-up.jsonl"
    corpus.write_text("".join(json.dumps(paper(i)) + "\n" for i in range(SESSIONS)))
    done = run_cli("ingest", str(corpus), env={"RAG_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    with running_app(home, base / "serve.log") as url:
        yield url


def chat_texts(chat: list[dict]) -> list[str]:
    """The text of each message as the client receives it (content parts joined)."""
    out = []
    for message in chat:
        content = message["content"]
        parts = content if isinstance(content, list) else [content]
        out.append(" ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in parts))
    return out


def cited_titles(html: str) -> str:
    """The cited-cards part of an answer (not the "also retrieved" list)."""
    if 'class="rag-cards"' not in html:
        return ""
    return html.split('class="rag-cards"', 1)[1].split("rag-also", 1)[0]


def test_twenty_simultaneous_two_turn_conversations(server: str) -> None:
    from gradio_client import Client

    times: list[float] = []
    errors: list[str] = []
    chats: dict[int, list[str]] = {}
    start = threading.Barrier(SESSIONS)

    def converse(i: int) -> None:
        try:
            client = Client(server, verbose=False)
            start.wait(60)
            for q in questions(i):
                t0 = time.perf_counter()
                chat, box, *_ = client.predict(q, api_name="/ask")  # then the exports and the Stop button
                times.append(time.perf_counter() - t0)
                assert box in ("", {"__type__": "update"})  # cleared when taken, then left alone (a no-op update)
            chats[i] = chat_texts(chat)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            errors.append(f"session {i}: {type(exc).__name__}: {exc}")

    began = time.perf_counter()
    threads = [threading.Thread(target=converse, args=(i,), daemon=True) for i in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, BOUND_S - (time.perf_counter() - began)))
    wall = time.perf_counter() - began
    assert not errors, errors
    assert wall < BOUND_S and len(chats) == SESSIONS, f"{len(chats)} of {SESSIONS} done in {wall:.0f}s"

    for i, texts in chats.items():
        q1, q2 = questions(i)
        assert len(texts) == 4, (i, len(texts))  # its own two turns, nobody else's
        assert q1 in texts[0] and q2 in texts[2]
        for answer in (texts[1], texts[3]):
            assert "Could not answer" not in answer and "Something went wrong" not in answer
            assert f"{NAMES[i]}: Learning from" in cited_titles(answer), (i, answer[:400])
        others = [NAMES[j] for j in range(SESSIONS) if j != i]
        assert not any(f"What does {name} learn" in texts[0] + texts[2] for name in others)
    assert "trained" in texts[3] and "graphics cards" in texts[3]

    median = statistics.median(times)
    p95 = statistics.quantiles(times, n=20, method="inclusive")[18]
    print(f"\n{SESSIONS} sessions x 2 turns: {len(times)} answers in {wall:.1f}s wall; "
          f"answer time median {median:.2f}s, p95 {p95:.2f}s, max {max(times):.2f}s")
