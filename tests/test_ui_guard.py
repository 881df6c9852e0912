"""The web chat from an outsider's side (issue 16): feedback export, Host header, request size,
Gradio's open routes under a login, refused questions, and files an upload event may name.

A small index (tests/fixtures/hybrid.jsonl) and the extractive backend: no model is loaded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from rag.answer.answerer import MAX_QUESTION_CHARS
from rag.ingest.ingestor import Ingestor
from rag.settings import Settings
from tests.conftest import FIXTURES, free_port
from ui.app import WebApp
from ui.guard import HostPolicy, host_name
from ui.state import Session

QUESTION = "Which method retrieves passages with a learned sparse index?"


@pytest.fixture
def small_app(rag_home: Path, embedder) -> WebApp:  # type: ignore[no-untyped-def]
    settings = Settings(home=rag_home, llm={"backend": "extractive"})
    Ingestor(settings, embedder=embedder).run([FIXTURES / "hybrid.jsonl"])
    return WebApp(settings, embedder=embedder)


def ask(app: WebApp, question: str, session: Session | None = None) -> Session:
    outs = list(app.ask(question, session))
    return outs[-1][-1]


def rate_first_answer(app: WebApp, session: Session) -> None:
    index = next(iter(session.records))
    app.rate(session, gr.LikeData(None, {"index": index, "value": [], "liked": True}))


# ------------------------------------------------------------------ feedback export (item 4)


def test_feedback_export_holds_only_the_callers_own_session(small_app: WebApp) -> None:
    alice = ask(small_app, "What does the ALICE-SECRET method do with sparse retrieval?")
    rate_first_answer(small_app, alice)
    bob = ask(small_app, QUESTION)
    rate_first_answer(small_app, bob)
    assert len(small_app.feedback.read()) == 2  # both are kept in the data home

    path, status = small_app.export_feedback(bob)
    text = Path(path).read_text()  # type: ignore[arg-type]
    assert "1 feedback line" in status and "ALICE-SECRET" not in text and alice.id not in text
    assert [json.loads(line)["session"] for line in text.splitlines()] == [bob.id]
    stranger = Session.new(small_app.pool.default, small_app.settings)
    assert small_app.export_feedback(stranger) == (None, "No feedback from this tab yet.")
    assert small_app.export_feedback(None)[0] is None  # an API call without a session gets nothing


# ------------------------------------------------------------------ refused questions (item 6)


def test_a_refused_question_stays_out_of_the_history(small_app: WebApp, monkeypatch: pytest.MonkeyPatch) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda message, *a, **k: warnings.append(message))
    session = ask(small_app, QUESTION)
    before = (list(session.messages), len(session.conversation.turns))
    huge = "why " * (10 * 2**20 // 4)  # 10 MB
    outs = list(small_app.ask(huge, session))
    assert (session.messages, len(session.conversation.turns)) == before
    assert all(len(json.dumps(m)) < 100_000 for m in session.messages)
    assert len(outs) == 1 and not isinstance(outs[0][1], str)  # the box is left as it was (gr.skip), not echoed
    assert warnings and f"limit {MAX_QUESTION_CHARS:,}" in warnings[0] and "shorter" in warnings[0]
    # a question at the limit is still answered
    session = ask(small_app, QUESTION + " " * 10 + "x" * (MAX_QUESTION_CHARS - len(QUESTION) - 10), session)
    assert len(session.messages) == len(before[0]) + 2


# ------------------------------------------------------------------ uploads (item 7)


def test_upload_touches_only_files_the_page_uploaded(small_app: WebApp, tmp_path: Path) -> None:
    demo = small_app.build()
    cache = Path(gr.utils.get_upload_folder())
    cache.mkdir(parents=True, exist_ok=True)
    # another tab's feedback export, cached by Gradio when it was served: an event may name it
    export = cache / f"test-{os.getpid()}-feedback.jsonl"
    export.write_text(json.dumps({"title": "Somebody's feedback", "abstract": "Private words of a user."}) + "\n")
    refused_kind = cache / f"test-{os.getpid()}-tool.exe"
    refused_kind.write_text("MZ")
    try:
        report, corpus, *_ = small_app.upload([str(export), SimpleNamespace(path=str(refused_kind),
                                                                            orig_name="tool.exe")])
        assert export.exists() and refused_kind.exists()  # neither read nor deleted
        assert "refused test-" in report and "not a file uploaded from this page" in report
        assert "refused tool.exe" in report and "papers:" not in report and str(cache) not in report
        assert not any(p.title == "Somebody's feedback" for p in small_app.pool.retriever.refresh().papers.values())

        # a file /upload handed out is ingested once, then deleted; naming it again is refused
        mine = cache / f"test-{os.getpid()}-mine.jsonl"
        mine.write_text(json.dumps({"title": "Quokka counts", "abstract": "Quokkas were counted."}) + "\n")
        demo.upload_file_set.add(str(mine))
        report, *_ = small_app.upload([str(mine)])
        assert "papers: 1 new" in report and not mine.exists()
        report, *_ = small_app.upload([str(mine)])
        assert "not a file uploaded from this page" in report
    finally:
        for path in (export, refused_kind):
            path.unlink(missing_ok=True)


# ------------------------------------------------------------------ in front of Gradio (items 4, 6, 8)


def test_host_policy() -> None:
    loopback = HostPolicy.for_bind("127.0.0.1", ["chat.example.org", "*.lab.example"])
    assert loopback.allows("127.0.0.1:7860") and loopback.allows("localhost:7860") and loopback.allows("[::1]:7860")
    assert loopback.allows("chat.example.org") and loopback.allows("gpu1.lab.example:7860")
    assert loopback.allows("10.1.2.3:7860")  # an IP literal has no DNS to rebind
    assert not loopback.allows("attacker.example:7860") and not loopback.allows("lab.example.evil.com")
    assert not loopback.allows(None) and not loopback.allows("")
    assert HostPolicy.for_bind("127.0.0.1", share=True).allows("abc123.gradio.live")
    assert host_name("EXAMPLE.org:80") == "example.org"


@pytest.fixture
def served(small_app: WebApp) -> Iterator[tuple[WebApp, int]]:
    """The web chat launched for real with a login, on a free loopback port."""
    small_app.settings.ui.auth = "ann:s3cret"
    small_app.settings.ui.allowed_hosts = ["chat.example.org"]
    port = free_port()
    demo = small_app.launched(port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield small_app, port
    finally:
        demo.close()


def request(port: int, method: str, path: str, body: bytes | None = None, host: str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True)
        conn.putheader("Host", host or f"127.0.0.1:{port}")
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused before the body was read
                conn.send(body)
        reply = conn.getresponse()
        return reply.status, reply.read(), reply
    finally:
        conn.close()


def login_cookie(port: int) -> str:
    form = urllib.parse.urlencode({"username": "ann", "password": "s3cret"}).encode()
    status, _, reply = request(port, "POST", "/login", form,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    return "; ".join(c.split(";", 1)[0] for c in reply.headers.get_all("set-cookie") or [])


def test_other_host_names_are_refused(served: tuple[WebApp, int]) -> None:
    _, port = served
    status, body, _ = request(port, "GET", "/", host=f"attacker.example:{port}")
    assert status == 400 and b"RAG_UI__ALLOWED_HOSTS" in body and b"/tmp" not in body
    status, _, _ = request(port, "GET", "/gradio_api/heartbeat/abc", host="rebind.attacker.example")
    assert status == 400
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "chat.example.org"):
        status, _, _ = request(port, "GET", "/", host=host)
        assert status == 200, host


def test_gradio_open_routes_need_the_login(served: tuple[WebApp, int]) -> None:
    _, port = served
    cancel = json.dumps({"session_hash": "victim", "fn_index": 0, "event_id": "e1"}).encode()
    json_type = {"Content-Type": "application/json"}
    for method, path, body in (("POST", "/gradio_api/cancel", cancel), ("POST", "/gradio_api/reset", cancel),
                               ("GET", "/gradio_api/heartbeat/victim", None)):
        status, _, _ = request(port, method, path, body, headers=json_type)
        assert status == 401, path
    cookie = login_cookie(port)
    status, body, _ = request(port, "POST", "/gradio_api/cancel", cancel, headers={**json_type, "Cookie": cookie})
    assert status == 200 and json.loads(body) == {"success": True}
    status, _, _ = request(port, "POST", "/gradio_api/cancel", cancel,
                           headers={**json_type, "Cookie": cookie.replace("=", "=forged")})
    assert status == 401  # a forged token is no login


def test_oversized_requests_are_refused_before_they_are_read(served: tuple[WebApp, int]) -> None:
    app, port = served
    cookie = login_cookie(port)
    huge = json.dumps({"data": ["why " * (10 * 2**20 // 4)], "fn_index": 0, "session_hash": "s"}).encode()
    for _ in range(5):
        status, body, _ = request(port, "POST", "/gradio_api/queue/join", huge,
                                  headers={"Content-Type": "application/json", "Cookie": cookie})
        assert status == 413 and b"limit" in body
    # without Content-Length (chunked), the body is read only up to the limit
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/gradio_api/queue/join", body=iter([huge[i:i + 2**16] for i in range(0, 2**21, 2**16)]),
                     headers={"Content-Type": "application/json", "Cookie": cookie}, encode_chunked=True)
        assert conn.getresponse().status == 413
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        conn.close()
    status, _, _ = request(port, "POST", "/gradio_api/queue/join", b"{}",
                           headers={"Content-Type": "application/json", "Cookie": cookie})
    assert status != 413  # small requests pass through to Gradio


# ------------------------------------------------------------------ index errors reach web users without paths (item 3)


def test_index_errors_in_the_chat_name_no_server_path(small_app: WebApp) -> None:
    from rag.errors import IndexDamagedError

    home = small_app.settings.home

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise IndexDamagedError(f"the index in {home} is damaged: {home}/chroma/x/header.bin is 3 bytes")

    small_app.pool.retriever.search = broken  # type: ignore[method-assign]
    session = ask(small_app, QUESTION)
    html = session.messages[-1]["content"]
    assert "damaged" in html and "the data home" in html and str(home) not in html and "rebuild" in html


def test_a_file_uploaded_through_gradio_is_ingested(small_app: WebApp, tmp_path: Path) -> None:
    """The page's own path (what a browser does): /gradio_api/upload, then the /upload event naming it."""
    from gradio_client import Client, handle_file

    corpus = tmp_path / "quokka.jsonl"
    corpus.write_text(json.dumps({"title": "Quokka counts", "abstract": "Quokkas were counted on an island."}) + "\n")
    port = free_port()
    demo = small_app.launched(port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        report = client.predict([handle_file(str(corpus))], api_name="/upload")[0]
        assert "papers: 1 new" in report and "not a file uploaded" not in report, report
        export = client.predict(api_name="/export_feedback")
        assert export[0] is None and "No feedback from this tab yet" in export[1]
    finally:
        demo.close()


def test_the_guard_holds_when_the_chat_is_mounted_beside_the_api(small_app: WebApp) -> None:
    """`rag serve` mounts the chat in the API's app (ui.server.combined_app): the same checks apply."""
    from starlette.testclient import TestClient

    from ui.server import combined_app

    small_app.settings.ui.auth = "ann:s3cret"
    app = combined_app(small_app, "127.0.0.1", free_port())
    with TestClient(app, base_url="http://127.0.0.1:7860") as client:
        assert client.get("/", headers={"Host": "attacker.example"}).status_code == 400
        assert client.get("/").status_code == 200
        cancel = {"session_hash": "victim", "fn_index": 0, "event_id": "e1"}
        assert client.post("/gradio_api/cancel", json=cancel).status_code == 401
        big = client.post("/gradio_api/queue/join", content=b"x" * (2 << 20),
                          headers={"Content-Type": "application/json"})
        assert big.status_code == 413
