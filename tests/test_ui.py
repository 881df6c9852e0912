"""Handler-level tests of the web chat (`ui.app.WebApp`): every event, called as Gradio would.

The app runs over a private copy of the bundled index with the extractive backend, or
with `rag.testing.ScriptedBackend` (a deterministic streaming LLM stand-in) where a test needs tokens,
unsupported sentences or a failure mid-stream. No server, no browser: see
test_ui_browser.py and test_ui_load.py for those.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest

from rag.answer.answer_result import Answer, Citation
from rag.answer.support import AnswerSentence, Evidence
from rag.index.corpus import Paper
from rag.index.loaders import load_bibtex
from rag.ingest.ingestor import Ingestor
from rag.settings import Settings
from rag.testing import ScriptedBackend
from tests.conftest import free_port
from ui import app as app_module
from ui import render
from ui.app import WebApp, parse_auth
from ui.feedback import REQUIRED_KEYS
from ui.state import ChatSettings, Session
from ui.uploads import display_name

PLAMO_Q = "How many tokens was PLaMo-100B trained on from scratch?"
PLAMO_TITLE = "PLaMo-100B: A Ground-Up Language Model Designed for Japanese Proficiency"
PLAMO_SENTENCE = ("The model was trained from scratch using 2 trillion tokens, with architecture such as QK "
                  "Normalization and Z-Loss to ensure training stability during the training process.")
EVIL_TITLE = "Harmless Title <script>alert(1)</script> for Zorblax Graphs"
EVIL_ABSTRACT = ("Zorblax graphs are a new structure for sparse retrieval <img src=x onerror=alert(1)>. "
                 "We show zorblax graphs beat baselines <img src=\"https://example.com/x.png\"> on three tasks. "
                 "The code is at <script>alert(1)</script> our site.")


@pytest.fixture
def webapp(bundled_copy: Path, embedder) -> WebApp:  # type: ignore[no-untyped-def]
    return WebApp(Settings(home=bundled_copy, llm={"backend": "extractive"}), embedder=embedder)


def fake_app(home: Path, embedder, reply: str, **kwargs) -> WebApp:  # type: ignore[no-untyped-def]
    return WebApp(Settings(home=home, llm={"backend": "llamacpp"}), embedder=embedder,
                  backend=ScriptedBackend(reply, model="fake-model.gguf", **kwargs))


def run(app: WebApp, question: str, session: Session | None = None, **settings) -> tuple[list, Session]:  # type: ignore[no-untyped-def]
    """Drain the ask generator; returns (every yielded output tuple, the session)."""
    outs = list(app.ask(question, session, **settings))
    return outs, outs[-1][-1]


def last_html(session: Session) -> str:
    return session.messages[-1]["content"]


def like(index: int, liked: bool | str) -> gr.LikeData:
    return gr.LikeData(None, {"index": index, "value": [], "liked": liked})


# ------------------------------------------------------------------ asking


def drawn(outs: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """The handler's outputs that redraw the chat, not the silent ticks (all skips but the session)."""
    return (o for o in outs if isinstance(o[0], list))


def test_ask_streams_then_shows_cited_cards_with_evidence(webapp: WebApp) -> None:
    outs, session = run(webapp, PLAMO_Q)
    first_chat, first_box = outs[0][0], outs[0][1]
    assert [m["role"] for m in first_chat] == ["user", "assistant"]
    assert "searching the papers" in first_chat[1]["content"] and first_box == ""
    html = last_html(session)
    assert 'class="rag-card"' in html and PLAMO_TITLE in html
    marked = re.findall(r"<mark[^>]*>(.*?)</mark>", html)
    assert PLAMO_SENTENCE in marked
    assert "<details>" in html and "Also retrieved, not cited" in html
    assert "answered by extractive" in html and re.search(r"first token \d+\.\d\d s", html)
    md, bib = outs[-1][2], outs[-1][3]
    assert Path(md).read_text().startswith("# Conversation") and "@" in Path(bib).read_text()


def test_tokens_appear_as_they_are_generated_then_the_checked_answer(bundled_copy, embedder, monkeypatch) -> None:
    monkeypatch.setattr(app_module, "STREAM_EVERY_S", 0.0)
    reply = f"{PLAMO_SENTENCE} [1] Bananas grow on the moon every winter [1]. <script>x()</script>"
    app = fake_app(bundled_copy, embedder, reply)
    outs, session = run(app, PLAMO_Q)
    partial = [o[0][-1]["content"] for o in drawn(outs[1:-1])]
    stages = [re.search(r'rag-stage[^>]*>([^<…]+)', p)[1] for p in partial]
    assert stages[0] == "searching the papers" and "writing the answer" in stages  # the stage line first
    partial = [p for p in partial if '"rag-text">The' in p]
    assert len(partial) >= 10 and partial[0].count(" ") < partial[5].count(" ")  # grows token by token
    assert "The model was" in partial[5] and "Bananas" not in partial[5]
    assert all("rag-card" not in p for p in partial)
    html = last_html(session)
    assert PLAMO_TITLE in html and "answered by llamacpp · fake-model.gguf" in html
    unsupported = re.findall(r'<span class="rag-unsupported"[^>]*>(.*?)</span><span class="rag-badge"', html)
    assert len(unsupported) == 1 and "Bananas grow on the moon" in unsupported[0]
    assert "<script" not in html and "&lt;script&gt;x()&lt;/script&gt;" in html
    assert "1 of 2 sentences not supported by a cited abstract" in html


def test_incomplete_answer_gets_a_banner(bundled_copy, embedder) -> None:
    app = fake_app(bundled_copy, embedder, f"{PLAMO_SENTENCE} [1] More words here", fail_after=5)
    _, session = run(app, PLAMO_Q)
    html = last_html(session)
    assert "Incomplete answer:" in html and "connection dropped" in html and "The model was trained" in html


def test_abstention_and_unavailable_backend_are_shown_not_raised(webapp: WebApp) -> None:
    _, session = run(webapp, "What is the best recipe for banana bread with walnuts?")
    assert "Abstained:" in last_html(session)
    webapp.settings.llm.ollama_url = f"http://127.0.0.1:{free_port()}"
    _, session = run(webapp, PLAMO_Q, session, backend="ollama")
    assert "Could not answer" in last_html(session) and len(session.messages) == 4


def test_backend_note_is_information_shown_as_given() -> None:
    paper = Paper("T", "An abstract sentence here.")
    answer = Answer("q", "q", "An abstract sentence here. [1]", backend="llamacpp", model="m",
                    notes=["Ollama unreachable at http://x: using bundled SmolLM2-135M"],
                    citations=[Citation(1, paper, True, 0.5)])
    html = render.render_answer(answer)
    assert 'rag-banner info"><strong>Note:</strong> Ollama unreachable' in html and "warn" not in html
    assert "rag-banner" not in render.render_answer(answer, notes=[])  # a note already shown in this tab


def test_backend_note_once_per_tab_and_never_on_an_abstention(bundled_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from tests.ollama_standin import OllamaStandIn

    with OllamaStandIn(reply=f"{PLAMO_SENTENCE} [1]") as server:
        app = WebApp(Settings(home=bundled_copy, llm={"backend": "auto", "ollama_url": server.url}),
                     embedder=embedder)
        _, session = run(app, "What is the best recipe for banana bread with walnuts?")  # no model runs
        assert "Abstained:" in last_html(session) and "answering with Ollama" not in last_html(session)
        _, session = run(app, PLAMO_Q, session)
        assert "<strong>Note:</strong> answering with Ollama model" in last_html(session)
        _, session = run(app, "How was PLaMo-100B trained?", session)
        assert "answering with Ollama" not in last_html(session) and PLAMO_TITLE in last_html(session)


def test_the_placeholder_follows_the_index(webapp: WebApp, tmp_path: Path) -> None:
    assert "Ask about the 184 papers" in webapp.placeholder_text()
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"title": "Glimmer nets", "abstract": "Glimmer nets light up sparse graphs."}) + "\n")
    webapp.upload([str(path)])
    assert "Ask about the 185 papers" in webapp.placeholder()["placeholder"]
    webapp.remove("title:" + __import__("hashlib").sha1(b"glimmer nets").hexdigest()[:16])
    assert "Ask about the 184 papers" in webapp.placeholder_text()


def test_follow_up_is_condensed_by_the_conversation(webapp: WebApp) -> None:
    _, session = run(webapp, PLAMO_Q)
    _, session = run(webapp, "What post-training techniques were applied to it?", session)
    turn = session.conversation.turns[-1]
    assert turn.condensed_by == "rules" and "PLaMo-100B" in turn.query
    assert PLAMO_TITLE in last_html(session)


def test_new_conversation_clears_history_numbers_and_exports(webapp: WebApp) -> None:
    _, session = run(webapp, PLAMO_Q)
    _, session = run(webapp, "What does VIVAT mitigate in VAE training?", session)
    assert len(session.messages) == 4 and len(session.conversation.numbers) >= 2  # the cited papers
    chat, md, bib, comment, session = webapp.new_conversation(session)
    assert chat == [] and md is None and bib is None and comment == ""
    assert not session.conversation.turns and not session.conversation.numbers and not session.records
    _, session = run(webapp, "What does VIVAT mitigate in VAE training?", session)
    assert len(session.messages) == 2 and "[1]" in last_html(session)


def test_settings_are_per_session(webapp: WebApp) -> None:
    _, a = run(webapp, PLAMO_Q, k=1, dense_weight=0.0, temperature=0.7)
    _, b = run(webapp, PLAMO_Q)
    assert a is not b and a.id != b.id
    assert (a.settings.k, a.settings.dense_weight, a.settings.temperature) == (1, 0.0, 0.7)
    assert (b.settings.k, b.settings.dense_weight) == (5, webapp.settings.retrieval.dense_weight)
    assert len(a.conversation.turns[-1].answer.retrieved) == 1
    assert len(b.conversation.turns[-1].answer.retrieved) == 5
    assert "Also retrieved" not in last_html(a) and "Also retrieved" in last_html(b)
    # malformed values from an API client are clamped, never trusted
    odd = ChatSettings.parse(webapp.settings, "rm -rf", "bad model name!", 999, 7, -1, "x", None, None, None)
    top = webapp.settings.retrieval.max_k  # the one limit on k, every interface's
    assert (odd.backend, odd.model, odd.k, odd.dense_weight, odd.temperature) == ("extractive", "", top, 1.0, 0.0)


def test_a_which_papers_question_at_the_default_slider_reads_as_many_as_rag_ask(webapp: WebApp) -> None:
    # the slider at its default is "as many as the question needs": a list reads answer.list_papers
    _, session = run(webapp, "Which papers study test-time adaptation?")
    assert len(session.conversation.turns[-1].answer.retrieved) == webapp.settings.answer.list_papers > 5
    _, moved = run(webapp, "Which papers study test-time adaptation?", k=3)
    assert len(moved.conversation.turns[-1].answer.retrieved) == 3


def test_filters_reach_retrieval(webapp: WebApp, tmp_path: Path) -> None:
    rows = [{"title": f"Quokka study {y}", "abstract": f"Quokka populations were counted in {y} on an island. "
             "The counts rose.", "year": y, "authors": ["Ada Lovelace"], "categories": ["q-bio.PE"]}
            for y in (2019, 2023)]
    path = tmp_path / "quokka.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    webapp.upload([str(path)])
    box, year_from, _, author, category = webapp.facet_updates()
    assert box["visible"] and year_from["visible"] and author["visible"] and "q-bio.PE" in category["choices"]
    _, session = run(webapp, "How were quokka populations counted?", year_from=2022, year_to=2024)
    cited = session.conversation.turns[-1].answer.retrieved
    assert [r["title"] for r in cited] == ["Quokka study 2023"]


def test_a_busy_session_does_not_start_a_second_answer(webapp: WebApp) -> None:
    session = webapp.session(None)
    session.busy.acquire()
    try:
        with pytest.warns(UserWarning, match="Still answering .* yours stays in the box.*Stop"):
            (chat, box, *_), = list(webapp.ask(PLAMO_Q, session))
    finally:
        session.busy.release()
    assert chat == [] and isinstance(box, type(gr.skip()))  # the box is left as the user has it


def test_a_reversed_year_range_is_refused_with_its_fix(webapp: WebApp) -> None:
    with pytest.warns(UserWarning, match="give the earlier year first: 2020..2025"):
        (chat, box, *_), = list(webapp.ask(PLAMO_Q, None, year_from=2025, year_to=2020))
    assert chat == [] and isinstance(box, type(gr.skip()))


class GatedBackend(ScriptedBackend):
    """A ScriptedBackend that says nothing until ``gate`` opens (a long prompt evaluation)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply, model="gated.gguf")
        self.gate = threading.Event()

    def stream(self, messages, **kwargs):  # type: ignore[no-untyped-def,override]
        self.gate.wait(60)
        yield from super().stream(messages, **kwargs)


def test_the_stage_line_counts_seconds_while_the_model_is_silent_and_stop_ends_it(
        bundled_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    backend = GatedBackend(f"{PLAMO_SENTENCE} [1]")
    app = WebApp(Settings(home=bundled_copy, llm={"backend": "llamacpp"}), embedder=embedder,
                 backend=backend)
    session = app.session(None)
    outs = app.ask(PLAMO_Q, session)
    first = next(outs)
    assert first[1] == "" and first[4]["visible"] is True  # the box taken, the Stop button shown
    assert re.search(r'class="rag-stage[^"]*">searching the papers… · 0 s<', first[0][-1]["content"])
    seconds = []
    while not seconds or seconds[-1] < 2:  # the model is silent: the line is redrawn as the seconds pass
        html = next(drawn(outs))[0][-1]["content"]
        seconds.append(int(re.search(r"· (\d+) s<", html)[1]))
    assert seconds == sorted(seconds) and "rag-card" not in html
    app.stop(session)
    *_, last = outs
    assert "Stopped:" in last[0][-1]["content"] and last[4]["visible"] is False
    assert not session.busy.locked() and app.slots.acquire(blocking=False)  # the tab and its slot are free at once
    app.slots.release()
    backend.gate.set()  # the model finishes its step; what it wrote goes nowhere
    _, session = run(app, PLAMO_Q, session)
    assert PLAMO_TITLE in last_html(session) and len(session.conversation.turns) == 1


def test_concurrent_sessions_share_one_app_safely(webapp: WebApp) -> None:
    questions = {PLAMO_Q: "PLaMo-100B", "What does VIVAT mitigate in VAE training?": "VIVAT",
                 "What is the name of the 7B model described in the Nyonic technical report?": "Nyonic",
                 "What is TiKMiX and how does it mix pre-training data?": "TiKMiX"}
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def worker(q: str) -> None:
        try:
            _, session = run(webapp, q)
            results[q] = last_html(session)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(q,)) for q in list(questions) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for q, name in questions.items():
        assert name in results[q].split('class="rag-cards"', 1)[1].split("rag-also")[0]


# ------------------------------------------------------------------ uploads


def test_upload_updates_counts_and_reports_record_errors(webapp: WebApp, tmp_path: Path) -> None:
    path = tmp_path / "small.jsonl"
    path.write_text(json.dumps({"title": "Glimmer nets", "abstract": "Glimmer nets light up sparse graphs."}) + "\n"
                    + '{"title": "broken"\n'
                    + json.dumps({"title": "No abstract here"}) + "\n"
                    + json.dumps({"title": "Dusk layers", "abstract": "Dusk layers dim activations."}) + "\n")
    calls: list[tuple] = []
    report, corpus, *_filters, cleared = webapp.upload([str(path)], progress=lambda *a, **k: calls.append((a, k)))
    assert "184 unchanged" not in report  # only the uploaded file is ingested
    assert "papers: 2 new, 0 changed, 0 metadata only, 0 unchanged, 0 merged, 2 rejected" in report
    assert "rejected small.jsonl:2: bad JSON" in report and "rejected small.jsonl:3:" in report
    assert "index: 186 papers" in report and "**186 papers**" in corpus and cleared is None
    assert str(tmp_path) not in report  # errors name the user's file, not a server path
    assert any(k.get("unit") == "chunks" for _, k in calls)
    _, session = run(webapp, "What do glimmer nets light up?")
    assert "Glimmer nets" in last_html(session)


def test_traversal_and_unknown_file_names_are_handled_safely(webapp: WebApp, tmp_path: Path) -> None:
    real = tmp_path / "inbox" / "upload.bin"
    real.parent.mkdir()
    real.write_text(json.dumps({"title": "Evil twins", "abstract": "Evil twins duplicate records."}) + "\n")
    evil = SimpleNamespace(path=str(real), orig_name="../../evil.jsonl")
    exe = tmp_path / "tool.exe"
    exe.write_text("MZ")
    report, corpus, *_ = webapp.upload([evil, str(exe)])
    assert "papers: 1 new" in report and "**185 papers**" in corpus
    assert "refused tool.exe: unsupported file type '.exe'" in report
    assert ".." not in report.replace("...", "")
    for parent in [tmp_path, tmp_path.parent, real.parent.parent.parent]:
        assert not (parent / "evil.jsonl").exists()
    paper = next(p for p in webapp.pool.retriever.refresh().papers.values() if p.title == "Evil twins")
    assert paper.source == "upload:evil.jsonl"
    assert display_name("../../evil.jsonl") == "evil.jsonl"
    assert display_name("..\\..\\win.csv") == "win.csv"
    assert display_name("a/b/<x y>.bib") == "x_y_.bib" and display_name("..") == "file"


def test_oversize_upload_is_rejected(bundled_copy: Path, embedder, tmp_path: Path) -> None:
    app = WebApp(Settings(home=bundled_copy, llm={"backend": "extractive"}, ui={"max_upload_mb": 1}),
                 embedder=embedder)
    assert app.launch_options()["max_file_size"] == "1mb"
    big = tmp_path / "big.jsonl"
    row = json.dumps({"title": "Filler", "abstract": "word " * 2000})
    big.write_text("\n".join([row] * 130))  # ~1.3 MB
    report, corpus, *_ = app.upload([str(big)])
    assert f"refused big.jsonl: {big.stat().st_size / 2**20:.1f} MB is over the upload limit of 1 MB" in report
    assert "**184 papers**" in corpus and "papers:" not in report


# ------------------------------------------------------------------ feedback and exports


def test_feedback_is_appended_durably_as_json_lines(webapp: WebApp, monkeypatch) -> None:
    import os

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    _, session = run(webapp, PLAMO_Q, k=3)
    status, session = webapp.rate(session, like(0, True))
    assert "Only answers" in status
    status, session = webapp.rate(session, like(1, True))
    assert "👍" in status
    status, box, session = webapp.comment("  Exactly the number I needed. ", session)
    assert box == "" and "saved" in status
    _, session = run(webapp, "What does VIVAT mitigate in VAE training?", session)
    webapp.rate(session, like(3, "Dislike"))
    lines = webapp.settings.feedback_path.read_text().splitlines()
    assert len(lines) == 3 and len(synced) == 3
    rows = [json.loads(line) for line in lines]
    for row in rows:
        assert all(key in row for key in REQUIRED_KEYS)
        assert row["rating"] in {"up", "down"} and re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", row["time"])
        assert all(set(c) == {"number", "paper_id", "title"} for c in row["citations"])
    assert [r["rating"] for r in rows] == ["up", "up", "down"]
    assert rows[0]["question"] == PLAMO_Q and rows[0]["citations"][0]["title"] == PLAMO_TITLE
    assert rows[0]["settings"]["k"] == 3 and rows[0]["settings"]["backend"] == "extractive"
    assert rows[1]["comment"] == "Exactly the number I needed." and rows[1]["answer_id"] == rows[0]["answer_id"]
    assert "VIVAT" in rows[2]["question"]
    path, status = webapp.export_feedback(session)
    assert Path(path).read_text() == webapp.settings.feedback_path.read_text() and "3 feedback lines" in status


def test_comment_needs_a_rating_first(webapp: WebApp) -> None:
    _, session = run(webapp, PLAMO_Q)
    status, box, _ = webapp.comment("great", session)
    assert "Rate an answer" in status and box == "great"
    assert webapp.export_feedback(session) == (None, "No feedback from this tab yet.")


def test_markdown_and_bibtex_exports(webapp: WebApp, tmp_path: Path) -> None:
    outs, session = run(webapp, PLAMO_Q)
    md_path, bib_path = outs[-1][2], outs[-1][3]
    md = Path(md_path).read_text()
    assert md == session.conversation.to_markdown()
    assert f"**Q:** {PLAMO_Q}" in md and "## References" in md and f"[1] {PLAMO_TITLE}" in md
    bib = Path(bib_path).read_text()
    assert bib == session.conversation.to_bibtex() and bib.startswith("@")
    copy = tmp_path / "cited.bib"
    copy.write_text(bib)
    papers = [p for p in load_bibtex(copy) if isinstance(p, Paper)]
    assert [p.title for p in papers] == [PLAMO_TITLE]
    assert Path(md_path).parent.name == session.id  # per-session folder, removed with the session
    webapp.drop_session(session)
    assert not Path(md_path).exists()


# ------------------------------------------------------------------ sanitising


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def _assert_inert(html: str) -> None:
    """Parsed as a browser would: no script/img/iframe/style element, no on* or src attribute."""
    parser = _Tags()
    parser.feed(html)
    assert parser.tags
    for tag, attrs in parser.tags:
        assert tag in render.ALLOWED_TAGS, tag
        for name, value in attrs:
            assert not name.startswith("on") and name != "src" and name != "style", (tag, name)
            if name == "href":
                assert (value or "").startswith(("https://", "http://")), value


def test_card_escapes_hostile_title_and_abstract() -> None:
    paper = Paper(EVIL_TITLE, EVIL_ABSTRACT, urls=["javascript:alert(1)", "https://github.com/x/y"])
    sentence = "We show zorblax graphs beat baselines <img src=\"https://example.com/x.png\"> on three tasks."
    citation = Citation(1, paper, True, 0.9, [Evidence(1, paper.id, sentence, 0.8, "claim <b>bold</b> [1]")])
    html = render.card_html(citation)
    _assert_inert(render.clean(html))
    assert re.findall(r"</?\w+", render.clean(html)) == re.findall(r"</?\w+", html)  # all our tags kept
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<mark" in html and "&lt;img src=&quot;https://example.com/x.png&quot;&gt;" in html
    assert 'href="https://github.com/x/y"' in html and "javascript:" not in html


def test_hostile_paper_renders_escaped_in_the_chat(webapp: WebApp, tmp_path: Path) -> None:
    path = tmp_path / "evil.jsonl"
    path.write_text(json.dumps({"title": EVIL_TITLE, "abstract": EVIL_ABSTRACT}) + "\n")
    Ingestor(webapp.settings, embedder=webapp.pool.embedder).run([path])
    _, session = run(webapp, "What are zorblax graphs and what do they beat?")
    html = last_html(session)
    assert "Zorblax Graphs" in html.split('class="rag-cards"', 1)[1]
    _assert_inert(html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    question = webapp.ask('<img src=x onerror=alert(1)> "zorblax"?', session)
    for chat, *_ in drawn(question):
        _assert_inert(chat[-2]["content"] + chat[-1]["content"])


def test_render_helpers_escape_and_mark() -> None:
    assert render.highlight("A b. C <d>.", ["C <d>."]) == "A b. <mark>C &lt;d&gt;.</mark>"
    assert render.safe_href("javascript:alert(1)") is None and render.safe_href("github.com/a/b") == \
        "https://github.com/a/b"
    s = AnswerSentence("Unsupported claim <i>x</i> [1].", [1], False, 0.2)
    out = render.sentence_html(s, [1])
    assert 'class="rag-unsupported"' in out and "unsupported</span>" in out and "&lt;i&gt;" in out
    _assert_inert(render.render_streaming("<script>alert(1)</script>"))


# ------------------------------------------------------------------ launching


def test_launch_defaults_are_private(webapp: WebApp) -> None:
    options = webapp.launch_options()
    assert options["server_name"] == "127.0.0.1" and options["server_port"] == 7860
    assert options["share"] is False and options["auth"] is None and options["allowed_paths"] == []
    assert webapp.launch_options(host="0.0.0.0", port=9000)["server_name"] == "0.0.0.0"
    assert parse_auth("ann:s3:cret") == ("ann", "s3:cret") and parse_auth(None) is None
    with pytest.raises(Exception, match="user:password"):
        parse_auth("nopassword")
    webapp.settings.ui.auth = "ann:pw"
    assert webapp.launch_options()["auth"] == ("ann", "pw")


def test_the_page_builds_with_examples_and_api_names(webapp: WebApp) -> None:
    demo = webapp.build()
    config = demo.get_config_file()
    api_names = {d.get("api_name") for d in config["dependencies"]}
    assert {"ask", "stop", "new_conversation", "rate", "comment", "export_feedback", "upload", "corpus"} <= api_names
    chat = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "chat")
    assert chat["props"]["sanitize_html"] is True and len(chat["props"]["examples"]) == 4
    questions = webapp.examples()
    assert len(set(questions)) == 4 and PLAMO_Q in questions


def test_launched_app_requires_the_configured_login(webapp: WebApp) -> None:
    import urllib.error
    import urllib.parse
    import urllib.request

    webapp.settings.ui.auth = "ann:s3cret"
    port = free_port()
    demo = webapp.launched(port=port, prevent_thread_lock=True, quiet=True)
    try:
        base = f"http://127.0.0.1:{port}"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(base + "/config", timeout=10)
        assert denied.value.code == 401
        for password, ok in (("wrong", False), ("s3cret", True)):
            form = urllib.parse.urlencode({"username": "ann", "password": password}).encode()
            try:
                with urllib.request.urlopen(base + "/login", data=form, timeout=10) as reply:
                    assert ok and reply.status == 200
            except urllib.error.HTTPError as err:
                assert not ok and err.code in (400, 401)
        assert demo.max_file_size == 50 * 2**20 and demo.server_name == "127.0.0.1" and not demo.share
    finally:
        demo.close()


def test_serve_ingests_an_empty_index_first_and_says_so(rag_home: Path, embedder, monkeypatch) -> None:
    from tests.conftest import FIXTURES
    from ui import server

    monkeypatch.setattr(server, "bundled_corpus", lambda: FIXTURES / "hybrid.jsonl")
    lines: list[str] = []
    settings = Settings(home=rag_home, llm={"backend": "extractive"})
    app = server.prepare(settings, echo=lines.append, embedder=embedder)
    assert any("is empty: ingesting" in line and "hybrid.jsonl" in line for line in lines)
    assert app.facets()["papers"] > 0
    lines.clear()
    server.prepare(settings, echo=lines.append, embedder=embedder)
    assert lines[0].startswith("index: ") and not any("ingesting" in line for line in lines)


@pytest.mark.slow
def test_serve_ingests_in_a_child_so_the_server_never_holds_torch(rag_home: Path, monkeypatch) -> None:
    """An ingest loads torch and the embedding model (~500 MB); the server embeds through ONNX."""
    from tests.conftest import FIXTURES
    from ui import server

    monkeypatch.setattr(server, "bundled_corpus", lambda: FIXTURES / "hybrid.jsonl")
    lines: list[str] = []
    app = server.prepare(Settings(home=rag_home, llm={"backend": "extractive"}), echo=lines.append)
    assert any("is empty: ingesting" in line for line in lines) and any(line.startswith("papers: ") for line in lines)
    assert app.facets()["papers"] > 0 and app.pool.embedder._onnx is not None
    assert "model" not in app.pool.embedder.__dict__, "the server process loaded the torch model"


@pytest.mark.heavy
def test_serve_refuses_a_malformed_login_setting() -> None:
    from tests.conftest import run_cli

    done = run_cli("serve", "--port", str(free_port()), env={"RAG_UI__AUTH": "no-colon"}, timeout=120)
    assert done.returncode == 2 and "user:password" in done.stderr
