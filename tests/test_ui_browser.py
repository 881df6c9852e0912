"""The web chat in a real browser: `rag serve` in a subprocess, driven by Debian's chromium
through Playwright.

The server runs over a private copy of the bundled index (plus one hostile paper whose
title and abstract carry ``<script>`` and ``<img onerror>`` payloads and a remote image)
with the extractive backend. Every page records the requests it makes: nothing may go
to a host other than the loopback server. A second server answers through the Ollama stand-in
(`tests.ollama_standin`, in this process) with one answer slot (``RAG_UI__CONCURRENCY=1``), so
a test can make the model stall mid-answer: the stage line and its seconds, the Stop button and
a question sent while busy are driven there. Its screenshot of an answered turn with the next
one in progress is saved in the test's tmp folder and, when ``docs/screenshot.png`` is missing
or ``RAG_UPDATE_SCREENSHOT=1``, copied there. Needs ``/usr/bin/chromium``
(``apt-get install -y chromium``; `.ci/run` does it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import BIN, ROOT, free_port, run_cli, stop_process, wait_for_http
from tests.ollama_standin import OllamaStandIn

CHROMIUM = "/usr/bin/chromium"
UPDATE_SCREENSHOT = os.environ.get("RAG_UPDATE_SCREENSHOT") == "1"  # read now: the tests' fixtures drop RAG_*
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PLAMO_Q = "How many tokens was PLaMo-100B trained on from scratch?"
EVIL = {
    "title": 'Zorblax Graphs <img src=x onerror="window.__xss=3"> for Retrieval',
    "abstract": "Zorblax graphs are a new structure for sparse retrieval. <script>window.__xss=1</script> "
                'We show zorblax graphs beat baselines <img src=x onerror="window.__xss=2"> on three tasks. '
                '<img src="https://example.com/x.png"> Zorblax graphs need no training data at all.',
}

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing: apt-get install chromium")]


@contextmanager
def running_app(home: Path, log_path: Path, env: dict[str, str] | None = None,
                timeout: float = 300) -> Iterator[str]:
    """`rag serve --port N` over ``home`` (extractive backend); yields the base URL."""
    port = free_port()
    full_env = {**os.environ, "RAG_HOME": str(home), "RAG_LLM__BACKEND": "extractive", "HF_HUB_OFFLINE": "1",
                "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(BIN / "rag"), "serve", "--port", str(port)], stdout=log,
                                stderr=subprocess.STDOUT, env=full_env)
        url = f"http://127.0.0.1:{port}/"
        try:
            try:
                wait_for_http(url, timeout=timeout, proc=proc)
            except (RuntimeError, TimeoutError) as err:
                raise RuntimeError(f"{err}\n--- rag serve log ---\n{log_path.read_text()[-4000:]}") from None
            yield url
        finally:
            stop_process(proc, grace=20)


@pytest.fixture(scope="module")
def app_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui-browser")


@pytest.fixture(scope="module")
def server(bundled_home: Path, app_home: Path) -> Iterator[str]:
    """The served app: data home ``app_home/home``, Gradio's upload cache ``app_home/gradio``."""
    home = app_home / "home"
    shutil.copytree(bundled_home, home)
    evil = app_home / "evil.jsonl"
    evil.write_text(json.dumps(EVIL) + "\n")
    done = run_cli("ingest", str(evil), env={"RAG_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    with running_app(home, app_home / "serve.log", env={"GRADIO_TEMP_DIR": str(app_home / "gradio")}) as url:
        yield url


@pytest.fixture(scope="module")
def standin() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(reply="The model was trained from scratch using 2 trillion tokens [1].",
                       fail_after=3, delay_s=60) as server:
        yield server


@pytest.fixture(scope="module")
def slow_server(bundled_home: Path, app_home: Path, standin: OllamaStandIn) -> Iterator[str]:
    """`rag serve` answering through the Ollama stand-in, one answer at a time."""
    home = app_home / "slow-home"
    shutil.copytree(bundled_home, home)
    env = {"RAG_LLM__BACKEND": "ollama", "RAG_LLM__OLLAMA_URL": standin.url, "RAG_UI__CONCURRENCY": "1"}
    with running_app(home, app_home / "slow-serve.log", env=env) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    pg.requests = []  # every URL the page asked for
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.goto(server)
    pg.wait_for_selector("#question textarea", timeout=60_000)
    pg.wait_for_selector("#corpus-stats >> text=papers", timeout=60_000)
    yield pg
    context.close()


def open_tab(browser, url: str):  # type: ignore[no-untyped-def]
    """A fresh browser context (its own Gradio session) with the chat loaded."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.goto(url)
    pg.wait_for_selector("#question textarea", timeout=60_000)
    pg.wait_for_selector("#corpus-stats >> text=papers", timeout=60_000)
    return pg


@pytest.fixture
def slow_page(browser, slow_server: str):  # type: ignore[no-untyped-def]
    pg = open_tab(browser, slow_server)
    yield pg
    pg.context.close()


def ask(page, question: str) -> None:  # type: ignore[no-untyped-def]
    answers = page.locator("#chat .rag-meta").count()
    page.fill("#question textarea", question)
    page.click("#ask")
    page.wait_for_function(f"document.querySelectorAll('#chat .rag-meta').length > {answers}", timeout=120_000)


def remote_hosts(page) -> set[str]:  # type: ignore[no-untyped-def]
    hosts = {urlsplit(u).hostname for u in page.requests if u.startswith(("http:", "https:", "ws:", "wss:"))}
    return {h for h in hosts if h not in LOOPBACK}


def test_ask_then_expand_a_card_to_see_the_evidence(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert page.locator("#chat").get_by_text(re.compile(r"Ask about the \d+ papers")).is_visible()
    viewport = page.viewport_size or {"height": 720}
    height = (page.locator("#chat").bounding_box() or {"height": 0})["height"]
    assert 420 <= height <= viewport["height"]  # grows with the window instead of a fixed 620 px
    ask(page, PLAMO_Q)
    card = page.locator("#chat .rag-card").first
    assert "PLaMo-100B" in card.locator(".rag-title").inner_text()
    assert not card.locator("mark").first.is_visible()  # collapsed until asked for
    card.locator("details:not(.rag-similar) summary").click()
    mark = card.locator("mark").first
    mark.wait_for(state="visible")
    assert "2 trillion tokens" in mark.inner_text()
    similar = card.locator("details.rag-similar")
    similar.locator("summary").click()
    first_similar = similar.locator("li").first
    first_similar.wait_for(state="visible")
    assert "PLaMo-100B" not in first_similar.inner_text()  # the paper itself is never its own neighbour
    assert "answered by extractive" in page.locator("#chat .rag-meta").last.inner_text()
    page.screenshot(path=str(tmp_path / "answered-chat.png"), full_page=True)
    assert not remote_hosts(page)


def test_example_question_feedback_and_new_conversation(page, app_home: Path) -> None:  # type: ignore[no-untyped-def]
    page.locator("#chat").get_by_text(PLAMO_Q).click()  # an example question on the empty chat
    page.wait_for_selector("#chat .rag-card", timeout=120_000)
    page.locator("#chat button[aria-label='Like']").last.click()
    log = app_home / "home" / "feedback.jsonl"
    for _ in range(100):
        if log.exists() and log.read_text().strip():
            break
        page.wait_for_timeout(300)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    page.click("#feedback button, #feedback .label-wrap")  # open the Feedback panel
    page.wait_for_selector("#feedback >> text=Recorded", timeout=30_000)
    assert rows[-1]["rating"] == "up" and rows[-1]["question"] == PLAMO_Q and rows[-1]["citations"]
    page.click("#new-conversation")
    page.wait_for_function("document.querySelectorAll('#chat .rag-meta').length === 0", timeout=30_000)
    assert page.locator("#chat").get_by_text(PLAMO_Q).is_visible()  # the examples are back


def test_compare_the_cited_papers(page) -> None:  # type: ignore[no-untyped-def]
    """The Compare panel: the last answer's cited papers, a table streamed in with the evidence on
    hover, and its Markdown download; then the hostile paper's row stays inert."""
    ask(page, PLAMO_Q)
    page.click("#compare-panel button, #compare-panel .label-wrap")  # open the panel
    page.click("#compare-cited")
    page.wait_for_function("document.querySelector('#compare-query textarea').value.startsWith('title:')",
                           timeout=30_000)
    page.fill("#compare-question input", "How many tokens was the model trained on?")
    page.click("#compare")
    page.wait_for_selector("#compare-out .overview", timeout=120_000)  # the overview comes with the last row
    rows = page.locator("#compare-out tbody tr")
    assert rows.count() >= 1 and "PLaMo-100B" in rows.first.inner_text()
    assert "How many tokens was the model trained on?" in page.locator("#compare-out thead").inner_text()
    cells = page.locator("#compare-out td.cell")
    assert cells.count() == rows.count() * 5  # four default columns and the question
    assert all(cells.nth(i).get_attribute("title") for i in range(cells.count()))  # evidence, or why it is empty
    shown = rows.first.locator("td.cell.supported").last
    assert "2 trillion tokens" in (shown.get_attribute("title") or "")  # the evidence sentence, on hover
    page.wait_for_selector("#compare-md a, #compare-md .file-preview", timeout=30_000)
    assert "table.md" in page.locator("#compare-md").inner_text()
    page.fill("#compare-query textarea", "Zorblax graphs")
    page.click("#compare")
    page.wait_for_selector("#compare-out >> text=Zorblax", timeout=120_000)
    page.wait_for_selector("#compare-out .overview", timeout=120_000)
    assert page.evaluate("window.__xss") is None  # the title's <img onerror> and <script> stayed text
    assert not remote_hosts(page)


def test_a_table_request_in_the_chat_renders_its_table(page) -> None:  # type: ignore[no-untyped-def]
    """"Make a table of ..." in the chat: the table arrives in the chat (after Gradio's own HTML
    cleaning), every cell with its evidence or the reason it is empty on hover."""
    ask(page, "Make a table of test-time adaptation papers")
    message = page.locator("#chat .rag-answer").last
    rows = message.locator("tbody tr")
    assert rows.count() >= 2 and "adaptation" in message.locator("tbody").inner_text().lower()
    cells = message.locator("td.cell")
    assert cells.count() >= rows.count() * 4
    assert all(cells.nth(i).get_attribute("title") for i in range(cells.count()))
    assert "evidence on hover" in message.locator(".rag-meta").inner_text()
    assert not remote_hosts(page)


def test_upload_a_corpus_file_and_see_it_counted(page, tmp_path: Path, app_home: Path) -> None:  # type: ignore[no-untyped-def]
    before = int(re.search(r"([\d,]+) papers", page.locator("#corpus-stats").inner_text())[1].replace(",", ""))
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps({"title": "Glimmer nets", "abstract": "Glimmer nets light up sparse graphs."})
                     + "\n{broken\n")
    page.set_input_files("#upload input[type=file]", str(small))
    page.wait_for_selector("#upload >> text=small.jsonl", timeout=30_000)
    page.click("#upload-btn")
    report = page.locator("#upload-report textarea")
    page.wait_for_function("document.querySelector('#upload-report textarea').value.includes('papers:')",
                           timeout=120_000)
    text = report.input_value()
    assert "papers: 1 new" in text and "rejected small.jsonl:2: bad JSON" in text
    page.wait_for_selector(f"#corpus-stats >> text={before + 1:,} papers", timeout=30_000)
    assert not list((app_home / "gradio").rglob("small.jsonl"))  # the upload is not kept to be served back
    assert not remote_hosts(page)


def test_export_bibtex_downloads_the_cited_papers(page) -> None:  # type: ignore[no-untyped-def]
    ask(page, PLAMO_Q)
    with page.expect_download(timeout=30_000) as info:
        page.click("#export-bib")
    bib = Path(info.value.path()).read_text()
    assert bib.startswith("@") and "PLaMo-100B" in bib and info.value.suggested_filename.endswith(".bib")


def test_hostile_abstract_stays_inert(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ask(page, "What are zorblax graphs and what do they beat?")
    cards = page.locator("#chat .rag-card")
    titles = cards.locator(".rag-title").all_inner_texts()
    assert any("Zorblax Graphs <img" in t for t in titles)  # shown as text, not as an element
    for summary in cards.locator("details summary").all():
        summary.click()
    page.locator("#chat details.rag-also summary").first.click()
    page.wait_for_timeout(1500)  # time for any injected handler or image to fire
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("#chat script").count() == 0
    assert page.locator("#chat img[src='x'], #chat img[src*='example.com']").count() == 0
    assert "<script>window.__xss=1</script>" in page.locator("#chat").inner_text()
    page.screenshot(path=str(tmp_path / "hostile-paper.png"), full_page=True)
    assert not remote_hosts(page), page.requests


def test_stage_line_stop_and_a_question_sent_while_busy(slow_page, standin: OllamaStandIn,
                                                        tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = slow_page
    standin.behaviour = "ok"
    ask(page, PLAMO_Q)  # one answered turn, cards and all
    standin.behaviour = "stall_midstream"  # the next answer stops after three words, for a minute
    page.fill("#question textarea", "Which techniques keep PLaMo-100B training stable?")
    page.click("#ask")
    stage = page.locator("#chat .rag-stage")
    stage.wait_for(state="visible", timeout=5_000)  # at once, before any token
    assert re.search(r"· \d+ s", stage.inner_text())
    page.wait_for_function("/writing the answer… · [2-9] s/.test(document.querySelector('#chat .rag-stage').innerText)",
                           timeout=30_000)  # the stages pass; the seconds count while the model is silent
    assert page.locator("#stop").is_visible()
    shot = tmp_path / "progress.png"
    page.screenshot(path=str(shot), full_page=True)
    docs = ROOT / "docs" / "screenshot.png"
    if not docs.exists() or UPDATE_SCREENSHOT:
        shutil.copyfile(shot, docs)

    later = "What does VIVAT mitigate in VAE training?"
    page.fill("#question textarea", later)
    page.click("#ask")  # while busy: refused with a message, never dropped
    page.get_by_text("Still answering your previous question").first.wait_for(timeout=10_000)
    assert page.input_value("#question textarea") == later

    page.click("#stop")
    page.locator("#chat").get_by_text("Stopped:").wait_for(timeout=10_000)
    assert stage.count() == 0 and not page.locator("#stop").is_visible()
    standin.behaviour = "ok"  # the stalled request still holds the stand-in; the web slot is free
    ask(page, later)  # one answer slot (RAG_UI__CONCURRENCY=1): only a freed slot answers this now
    assert "answered by ollama" in page.locator("#chat .rag-meta").last.inner_text()
    assert page.input_value("#question textarea") == ""


def test_closing_the_tab_gives_the_answer_slot_back_within_a_second(browser, slow_server: str,  # type: ignore[no-untyped-def]
                                                                    standin: OllamaStandIn) -> None:
    """A tab closed mid-answer (the page went away, no Stop pressed) frees its answer slot: with one
    slot, another tab's question waiting for it goes ahead within a second of the close."""
    standin.behaviour = "stall_midstream"  # the first answer stalls after three words, for a minute
    first, second = open_tab(browser, slow_server), open_tab(browser, slow_server)
    try:
        first.fill("#question textarea", PLAMO_Q)
        first.click("#ask")
        first.wait_for_function("/writing the answer/.test(document.querySelector('#chat .rag-stage')?.innerText)",
                                timeout=30_000)  # the slot is held, the model silent
        second.fill("#question textarea", "What does VIVAT mitigate in VAE training?")
        second.click("#ask")
        second.wait_for_function("/waiting for a free answer slot/.test("
                                 "document.querySelector('#chat .rag-stage')?.innerText)", timeout=10_000)
        standin.behaviour = "ok"
        closed = time.monotonic()
        first.context.close()  # the tab goes away while its answer is being written
        second.wait_for_function("!/waiting for a free answer slot/.test("
                                 "document.querySelector('#chat .rag-stage')?.innerText ?? '')", timeout=30_000)
        waited = time.monotonic() - closed
        second.locator("#chat .rag-meta").first.wait_for(timeout=60_000)  # and it is answered
        assert "answered by ollama" in second.locator("#chat .rag-meta").first.inner_text()
    finally:
        second.context.close()
    assert waited < 1.0, f"the closed tab's slot came back after {waited:.2f} s"


def test_the_placeholder_counts_the_papers_after_an_upload(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = int(re.search(r"([\d,]+) papers", page.locator("#corpus-stats").inner_text())[1].replace(",", ""))
    page.locator("#chat").get_by_text(f"Ask about the {before:,} papers").wait_for(timeout=10_000)
    small = tmp_path / "two.jsonl"
    small.write_text("".join(json.dumps({"title": f"Placeholder paper {n}", "abstract": f"Abstract number {n}."})
                             + "\n" for n in range(2)))
    page.set_input_files("#upload input[type=file]", str(small))
    page.wait_for_selector("#upload >> text=two.jsonl", timeout=30_000)
    page.click("#upload-btn")
    page.locator("#chat").get_by_text(f"Ask about the {before + 2:,} papers").wait_for(timeout=120_000)
