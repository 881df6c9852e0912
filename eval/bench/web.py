"""Benchmark: how soon the web chat shows its stage line and its first words, next to the
pipeline's first token on the same question (issue 22: the stage line within 100 ms of the
question, the first words no later than the first token + 0.5 s).

A real ``rag serve`` process over the bench's data home answers through the bundled model
(``RAG_LLM__BACKEND=llamacpp``; the other settings come from this process's environment, as the
in-process arm has them), in a real browser (Debian's chromium through Playwright, as the
browser tests drive it). The page itself times each question with ``performance.now()``: from
the click on Ask to the first stage line in the chat, and to the first answer text (streamed
words, or the finished answer when nothing streamed: an abstention, a list from the search). In
the same run and on the same questions an in-process `rag.answer.answerer.Answerer` (the path ``rag ask``
takes in a warm process) gives the first token to compare with; the two arms take turns, so the
served model never computes while the other does, and both are warmed by one question first.

    rag bench --only web

Left out: networks other than loopback, the login, other browsers.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eval.bench.answer import bench_questions
from eval.bench.figures import BIN, Log, fmt_s, loadavg, p95, table_row, verdict
from rag.errors import InputError
from rag.settings import Settings
from rag.testing import free_port, running_server

STAGE_TARGET_S, FIRST_WORDS_MARGIN_S = 0.1, 0.5
CHROMIUM = "/usr/bin/chromium"
# Run in the page before each click: records the click, the first stage line and the first answer
# text (anything in the newest .rag-text but the cursor, or a new finished answer's meta line).
WATCH = """() => {
  const t = window.__t = {}; const chat = document.querySelector('#chat');
  const metas = chat.querySelectorAll('.rag-meta').length;  // 0 in a new conversation
  const texts = () => chat.querySelectorAll('.rag-text');
  const look = () => {
    const now = performance.now();
    if (!t.stage && chat.querySelector('.rag-stage')) t.stage = now;
    const last = texts()[texts().length - 1];
    const words = last && last.innerText.replace('▍', '').trim();
    if (!t.words && t.stage && (words || chat.querySelectorAll('.rag-meta').length > metas)) t.words = now;
    if (chat.querySelectorAll('.rag-meta').length > metas) { t.done = now; obs.disconnect(); }
  };
  const obs = new MutationObserver(look);
  obs.observe(chat, {subtree: true, childList: true, characterData: true});
  document.querySelector('#ask').addEventListener('click', () => { t.click = performance.now(); },
                                                  {once: true, capture: true});
}"""


@contextmanager
def web_page(home: Path, backend: str = "llamacpp", timeout: float = 300) -> Iterator[Any]:
    """``rag serve`` over ``home`` answering through ``backend`` (the bundled model by default), open
    in a headless chromium; yields the Playwright page, stops both after."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise InputError("the web step needs Playwright", "pip install 'paper-rag[dev]'") from None
    if not Path(CHROMIUM).exists():
        raise InputError(f"the web step needs a browser at {CHROMIUM}", "apt-get install -y chromium")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "RAG_HOME": str(home), "RAG_LLM__BACKEND": backend, "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    with running_server([str(BIN / "rag"), "serve", "--port", str(port)], url, timeout, env=env,
                        start_new_session=True), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#corpus-stats >> text=papers", timeout=timeout * 1000)
            yield page
        finally:
            browser.close()


def ask_in_page(page: Any, question: str, timeout_s: float = 600) -> dict[str, float]:
    """One question typed and sent in a new conversation (as ``rag ask`` asks it: no earlier turns
    to condense it with or to carry in the prompt): seconds from the click to the stage line, to the
    first words and to the finished answer, as the page measured them."""
    if page.locator("#chat .rag-meta").count():
        page.click("#new-conversation")
        page.wait_for_function("!document.querySelector('#chat .rag-meta')", timeout=30_000)
    page.fill("#question textarea", question)
    page.evaluate(WATCH)
    page.click("#ask")
    page.wait_for_function("window.__t.done", timeout=timeout_s * 1000)
    t = page.evaluate("window.__t")
    return {"stage_s": (t["stage"] - t["click"]) / 1000, "first_words_s": (t["words"] - t["click"]) / 1000,
            "total_s": (t["done"] - t["click"]) / 1000}


def bench_web(home: Path, n_questions: int = 8, log: Log | None = None,
              settings: Callable[[Path], Settings] | None = None) -> dict[str, Any]:
    """``rag bench``'s web step (see the module docstring)."""
    from rag.answer.answerer import Answerer

    log = log or (lambda _m: None)
    base = settings(home) if settings else Settings(home=home)
    answerer = Answerer(base.model_copy(update={"llm": base.llm.model_copy(update={"backend": "llamacpp"})}))
    questions = bench_questions(n_questions + 1)
    with web_page(home) as page:
        log("warming the web chat and the in-process answerer")
        ask_in_page(page, questions[0])
        answerer.ask(questions[0])
        load_start = loadavg()
        rows = []
        for i, question in enumerate(questions[1:]):
            web: dict[str, float] = {}
            ttft = 0.0
            for arm in (("web", "ask") if i % 2 else ("ask", "web")):
                if arm == "web":
                    web = ask_in_page(page, question)
                else:
                    ttft = answerer.ask(question).timings.get("ttft_s", 0.0)
            rows.append({**web, "ttft_s": ttft})
            log(f"answered {i + 1}/{len(questions) - 1}")
    return summarise_web(rows, [load_start, loadavg()])


def summarise_web(rows: list[dict[str, float]], load: list[Any]) -> dict[str, Any]:
    """The web step's figures and table rows from its questions (stage, first words, ttft each).

    ``ttft_s`` 0 means the pipeline wrote nothing (an abstention before the model, a list from the
    search): such questions count for the stage line only."""
    stage = [r["stage_s"] for r in rows]
    generated = [r for r in rows if r["ttft_s"] > 0]
    lag = [r["first_words_s"] - r["ttft_s"] for r in generated]
    med = statistics.median
    out: dict[str, Any] = {"web": {"questions": len(rows), "generated": len(generated), "load_average": load,
                                   "stage_median_s": med(stage), "stage_p95_s": p95(stage),
                                   "first_words_median_s": med(r["first_words_s"] for r in rows),
                                   "ttft_median_s": med(r["ttft_s"] for r in generated) if generated else None,
                                   "first_words_minus_ttft_median_s": med(lag) if lag else None,
                                   "first_words_minus_ttft_p95_s": p95(lag) if lag else None}, "per_question": rows}
    web = out["web"]
    out["rows"] = [
        table_row("web: stage line after the question, median", fmt_s(web["stage_median_s"]), "-", None,
                  f"<= {STAGE_TARGET_S * 1000:.0f} ms", verdict(web["stage_median_s"], STAGE_TARGET_S)),
        table_row("web: first words minus rag ask's first token, median",
                  "-" if not lag else f"{web['first_words_minus_ttft_median_s']:+.2f} s", "-", None,
                  f"<= {FIRST_WORDS_MARGIN_S:g} s",
                  "info" if not lag else verdict(web["first_words_minus_ttft_median_s"], FIRST_WORDS_MARGIN_S)),
    ]
    return out


__all__ = ["FIRST_WORDS_MARGIN_S", "STAGE_TARGET_S", "ask_in_page", "bench_web", "summarise_web", "web_page"]
