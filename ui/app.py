"""The Gradio web chat: a thin layer of event handlers over `rag.chat.Conversation`.

`WebApp` holds what is shared between users (one `ui.shared.AnswererPool`: models load once,
each guarding itself against threads; the feedback log; an export folder) and one method per UI
event. Per-user state is a `ui.state.Session` in a ``gr.State``, never a module global.
Handlers are plain methods so tests call them directly (``tests/test_ui.py``); `build`
wires them to components, `launch_options` holds the security-relevant launch settings.

Events (API names, usable from ``gradio_client``):

- ``/ask``: question + settings panel -> streamed chat (the stage the answer is at with its
  seconds, tokens, then the final answer with cited-paper cards, evidence marks, notes and
  timings) and the export files; a question sent while the tab is answering is refused with a
  message and stays in the box; ``/stop`` (the Stop button) ends the answer being made;
- ``/new_conversation``; ``/rate`` (the Chatbot's thumbs) and ``/comment``;
  ``/export_feedback``; ``/upload`` (corpus files -> the index, with progress);
  ``/corpus`` (counts, embedder and which filters the corpus supports); ``/remove_papers`` (paper
  ids -> removed from the index). Each cited-paper card folds out its similar papers.
- ``/compare`` (the Compare panel, `ui.compare`): a search, paper ids, or the last answer's cited
  papers -> an extraction table streamed row by row, evidence on hover, Markdown/CSV/BibTeX files.

Left out: retrieval, prompting and citation checking (`rag`), HTML (`ui.render`),
starting the server (`ui.server`).
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import gradio as gr

from rag.answer.answerer import STAGE_SEARCH as FIRST_STAGE
from rag.answer.request import AskRequest
from rag.bundled import DEV_SET, bundled_file
from rag.environment import GRADIO, set_defaults
from rag.errors import EmptyIndexError, RagError
from rag.index.corpus import Paper, clean_text
from rag.index.loaders import FORMATS
from rag.ingest.ingest_summary import record_lines
from rag.ingest.ingestor import stats as index_stats
from rag.llm import backend_names
from rag.search.filters import field_count
from rag.search.retrieval import visible
from rag.settings import Settings
from rag.table.columns import DEFAULT_COLUMNS
from rag.table.requests import table_request
from ui import render
from ui.chat_table import web_table
from ui.compare import ComparePanel
from ui.feedback import FeedbackLog, feedback_record
from ui.guard import CorsGate, HostPolicy, OriginPolicy, RequestGuard
from ui.progress import END, STAGE_TICK_S, AnswerRun
from ui.shared import UNKNOWN_MODEL_FIX, AnswererPool
from ui.state import ChatSettings, Session, TurnRecord
from ui.uploads import ingest_uploads, summary_text

log = logging.getLogger(__name__)
DEV_QUESTIONS = bundled_file(DEV_SET)  # the example questions
UPLOAD_TYPES = list(FORMATS)  # the corpus formats rag can load, as the file picker offers them
STREAM_EVERY_S = 0.04  # at most ~25 chat updates a second while tokens arrive
BUSY_MESSAGE = ("Still answering your previous question: yours stays in the box. Press Stop to end that answer, or "
                "send it again when the answer is done.")
SETTINGS_KEY = "paper-rag-settings"


class WebApp:
    """Shared resources + one handler per event. Build the UI with `build`."""

    def __init__(self, settings: Settings | None = None, pool: AnswererPool | None = None,
                 embedder: Any | None = None, backend: Any | None = None) -> None:
        self.settings = settings or Settings()
        self.pool = pool or AnswererPool(self.settings, embedder=embedder, backend=backend)
        self.feedback = FeedbackLog(self.settings.feedback_path)
        self.export_root = Path(tempfile.mkdtemp(prefix="paper-rag-web-"))
        self._ingest_lock = threading.Lock()
        # answers generated at once, counted here rather than by Gradio's queue: a waiting question
        # says so on its stage line, and a stopped answer gives its slot back at once
        self.slots = threading.BoundedSemaphore(self.settings.ui.concurrency)
        # paths Gradio's /upload handed out (the built page's ``upload_file_set``); None: not served, trust callers
        self.uploaded: set[str] | None = None
        self.compare = ComparePanel(self.pool, self.slots, self.export_root, self.public)

    # ---------------------------------------------------------- sessions

    def session(self, session: Session | None) -> Session:
        return session if isinstance(session, Session) else Session.new(self.pool.default, self.settings)

    def drop_session(self, session: Any) -> None:
        """gr.State delete callback: remove the tab's export files."""
        if isinstance(session, Session):
            shutil.rmtree(self.export_root / session.id, ignore_errors=True)

    def public(self, err: RagError) -> str:
        """``err``'s message and fix with server paths replaced: web users never see where the data lives.

        (``rag ingest --rebuild PATH`` in a fix stays: it names the command, not a path.)"""
        text = err.user_message()
        for path, name in ((self.settings.chroma_dir, "the index"), (self.settings.home, "the data home")):
            text = text.replace(f"in {path}", f"in {name}").replace(f"at {path}", f"at {name}")
            text = text.replace(str(path), name)
        return text

    @staticmethod
    def chat(session: Session) -> list[dict[str, Any]]:
        return [dict(m) for m in session.messages]

    # ---------------------------------------------------------- asking

    def ask(self, question: str | None, session: Session | None = None, backend: Any = None, model: Any = None,
            k: Any = None, dense_weight: Any = None, temperature: Any = None, year_from: Any = None,
            year_to: Any = None, author: Any = None, category: Any = None) -> Iterator[tuple[Any, ...]]:
        """Yields (chat, question box, Markdown export, BibTeX export, Stop button, session) as the answer is made.

        The message shows the stage the answer is at and the seconds since the question, redrawn
        while the model is silent (`ui.progress.AnswerRun`); tokens follow as they come; then the
        checked answer. A question sent while this tab is answering is refused with a message and
        stays in the box; the box is cleared only when a question is taken."""
        session = self.session(session)
        opts = ChatSettings.parse(self.settings, backend, model, k, dense_weight, temperature, year_from, year_to,
                                  author, category)
        session.settings = opts
        try:
            request = opts.request(self.settings, question or "")  # the question cleaned, the filters checked
            if request.model:
                self.pool.check(request.model, None if opts.backend == "auto" else opts.backend,
                                UNKNOWN_MODEL_FIX.replace(" (GET /v1/models)", ""))
        except RagError as err:  # refused: nothing of it enters the history, the box keeps it to correct
            if not visible(clean_text(question or "")):  # nothing typed (or only zero-width characters): no warning
                yield self.chat(session), "", gr.skip(), gr.skip(), gr.skip(), session
                return
            gr.Warning(err.user_message())
            yield self.chat(session), gr.skip(), gr.skip(), gr.skip(), gr.skip(), session
            return
        if not session.busy.acquire(blocking=False):
            gr.Warning(BUSY_MESSAGE)
            yield self.chat(session), gr.skip(), gr.skip(), gr.skip(), gr.skip(), session
            return
        finished, slot = False, False
        session.stop_requested.clear()
        try:
            started = time.monotonic()
            session.messages.append({"role": "user", "content": render.render_question(request.question)})
            session.messages.append({"role": "assistant", "content": render.render_streaming("", seconds=0)})
            at = len(session.messages) - 1
            yield self.chat(session), "", gr.skip(), gr.skip(), gr.update(visible=True), session

            while not (slot := self.slots.acquire(timeout=STAGE_TICK_S)):  # every slot busy: wait, visibly
                if session.stop_requested.is_set():
                    break
                session.messages[at]["content"] = render.render_streaming(
                    "", f"waiting for a free answer slot ({self.settings.ui.concurrency} in use)",
                    time.monotonic() - started)
                yield self.chat(session), gr.skip(), gr.skip(), gr.skip(), gr.skip(), session
            if slot:  # a message asking for a table ("make a table of ...") gets the table (`ui.chat_table`)
                table = table_request(request.question)
                yield from (self._answer(session, request, opts, at, started) if table is None
                            else web_table(self, session, table, request, at, started))
            else:
                session.messages[at]["content"] = render.render_stopped("")
            finished = True
            md, bib = self.write_exports(session)
            yield self.chat(session), gr.skip(), md, bib, gr.update(visible=False), session
        finally:
            if slot:
                self.slots.release()
            if not finished and session.messages and session.messages[-1]["role"] == "assistant" \
                    and len(session.messages) - 1 not in session.records:
                session.messages[-1]["content"] = render.render_error("the answer was interrupted", "Stopped")
            session.busy.release()

    def _answer(self, session: Session, request: AskRequest, opts: ChatSettings, at: int,
                started: float) -> Iterator[tuple[Any, ...]]:
        """`ask` with a slot held: the answer's events drawn into message ``at`` until it is done or stopped."""
        conversation = session.conversation
        answerer = self.pool.get(request.model, request.backend)
        before = (list(conversation.turns), dict(conversation.numbers))
        run = AnswerRun(conversation.respond(request, answerer))
        text, stage, answer, shown, last = "", FIRST_STAGE, None, "", 0.0
        try:
            while True:
                event = run.next(STAGE_TICK_S)
                if session.stop_requested.is_set():  # the Stop button: the thread closes the stream at its next event
                    session.detach(*before)  # what the stopped thread may still add goes elsewhere
                    session.messages[at]["content"] = render.render_stopped(text)
                    return
                if event is END:
                    break
                if isinstance(event, BaseException):
                    raise event
                kind = getattr(event, "kind", None)  # kinds this page does not know are ignored
                if kind == "token":
                    text += event.text
                elif kind == "stage":
                    stage = event.text
                elif kind == "done":
                    answer = event.answer
                    continue
                html = render.render_streaming(text, stage, time.monotonic() - started)
                if html != shown and (kind != "token" or time.monotonic() - last >= STREAM_EVERY_S):
                    session.messages[at]["content"] = shown = html
                    last = time.monotonic()
                    yield self.chat(session), gr.skip(), gr.skip(), gr.skip(), gr.skip(), session
                elif event is None:  # a silent tick, nothing new to draw: Gradio ends a closed tab's handler
                    yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), session  # only at a yield
        except RagError as err:
            session.messages[at]["content"] = render.render_error(self.public(err))
        except Exception as err:  # noqa: BLE001 - never show a stack trace in the chat
            log.exception("answering %r failed", request.question)
            session.messages[at]["content"] = render.render_error(
                f"internal error: {type(err).__name__}: {err}", "Something went wrong")
        finally:
            run.stop()  # a no-op once the stream ended; else (stopped, or the page went away) it ends at its next event
        if answer is not None:
            session.records[at] = TurnRecord(secrets.token_hex(6), answer, opts)
            notes = session.notices.fresh(answer, answerer.backend_for(request.backend)[1])
            session.messages[at]["content"] = render.render_answer(answer, notes, self.similar_for(answer))

    @staticmethod
    def stop(session: Session | None = None) -> None:
        """The Stop button: the answer being made in this tab (or waiting for a slot) ends now, what
        streamed stays, marked stopped, and its slot is free at once; the model stops at its next token."""
        if isinstance(session, Session):
            session.stop_requested.set()

    def similar_for(self, answer: Any, k: int = 3) -> dict[str, list[Any]]:
        """The ``k`` papers nearest to each cited one, by stored vectors, for its card (none on an error)."""
        from rag.library import similar_papers

        out: dict[str, list[Any]] = {}
        for c in answer.citations:
            try:
                out[c.paper.id] = similar_papers(self.pool.retriever, c.paper.id, k).hits
            except RagError as err:  # removed meanwhile, or the store went away: the card shows none
                log.info("no similar papers for %s: %s", c.paper.id, err)
        return out

    def pick_example(self, evt: gr.SelectData) -> str:
        value = evt.value
        return str(value.get("text", "") if isinstance(value, dict) else value)

    def new_conversation(self, session: Session | None = None) -> tuple[Any, ...]:
        """Clears history, citation numbers, ratings and export files of this tab only."""
        session = self.session(session)
        session.reset()
        self.drop_session(session)
        return [], None, None, "", session

    # ---------------------------------------------------------- exports

    def write_exports(self, session: Session) -> tuple[str | None, str | None]:
        """(Markdown path, BibTeX path or None when nothing is cited yet) for this tab."""
        if not session.conversation.turns:
            return None, None
        folder = self.export_root / session.id
        folder.mkdir(parents=True, exist_ok=True)
        md = folder / "conversation.md"
        md.write_text(session.conversation.to_markdown(), encoding="utf-8")
        bibtex = session.conversation.to_bibtex()
        if not bibtex.strip():
            return str(md), None
        bib = folder / "cited-papers.bib"
        bib.write_text(bibtex, encoding="utf-8")
        return str(md), str(bib)

    # ---------------------------------------------------------- feedback

    def rate(self, session: Session | None, like: gr.LikeData) -> tuple[str, Session]:
        """The Chatbot's thumbs: one JSON line per rating."""
        session = self.session(session)
        index = like.index[0] if isinstance(like.index, list | tuple) else like.index
        record = session.records.get(int(index))
        if record is None:
            return "Only answers can be rated.", session
        rating = {"Like": "up", "Dislike": "down"}.get(like.liked) if isinstance(like.liked, str) else \
            ("up" if like.liked else "down")
        if rating is None:
            return "Rating cleared here; the earlier line stays in the feedback log.", session
        record.rating, session.last_rated = rating, int(index)
        self.feedback.append(feedback_record(record, rating, None, session.id))
        thumb = "👍" if rating == "up" else "👎"
        return f"Recorded {thumb}. Add a comment below if you like (it is saved with this rating).", session

    def comment(self, text: str | None, session: Session | None = None) -> tuple[str, str, Session]:
        session = self.session(session)
        text = clean_text(text or "")[:4000]
        if not text:
            return "Type a comment first.", "", session
        if session.last_rated is None or session.last_rated not in session.records:
            return "Rate an answer with 👍 or 👎 first; the comment is saved with that rating.", text, session
        record = session.records[session.last_rated]
        self.feedback.append(feedback_record(record, record.rating or "down", text, session.id))
        return "Comment saved with your rating.", "", session

    def export_feedback(self, session: Session | None = None) -> tuple[str | None, str]:
        """This tab's own feedback lines as a file; other users' feedback stays in the data home."""
        session = self.session(session)
        path = self.feedback.export(self.export_root / session.id / "feedback" / secrets.token_hex(4),
                                    session=session.id)
        if path is None:
            return None, "No feedback from this tab yet."
        lines = sum(1 for _ in path.open(encoding="utf-8"))
        return str(path), f"{lines} feedback line{'s' if lines != 1 else ''} from this tab (JSON Lines)."

    # ---------------------------------------------------------- corpus

    def corpus_markdown(self) -> str:
        try:
            s = index_stats(self.settings)
        except RagError as err:
            return f"**Index unavailable:** {render.esc(self.public(err))}"
        if not s["ingested"]:
            return f"**Nothing ingested yet.** Upload corpus files below, or {EmptyIndexError.fix}."
        return (f"**{s['papers']:,} papers**, {s['chunks']:,} chunks  \n"
                f"embedder `{render.esc(s['embedder'])}` ({render.esc(s.get('dim'))}-d), "
                f"chunker `{render.esc(s.get('chunker'))}`")

    def facets(self, refresh: bool = False) -> dict[str, Any]:
        """Which filters the corpus supports: year range, authors present, categories."""
        try:
            papers: Mapping[str, Paper] = (self.pool.retriever.refresh() if refresh
                                           else self.pool.retriever.index()).papers
        except RagError:
            papers = {}
        seen_years: set[int] = set()
        categories: set[str] = set()
        dated = total = 0
        authors = False
        for p in papers.values():  # one pass, streamed from the catalogue: never all papers in memory
            total += 1
            dated += p.year is not None
            seen_years.update([p.year] if p.year else [])
            authors = authors or bool(p.authors)
            categories.update(p.categories)
        years = sorted(seen_years)
        return {"years": (years[0], years[-1]) if years else None, "authors": authors,
                "categories": sorted(categories), "papers": total,
                "year_info": field_count(papers.values(), "year") if dated < total else
                f"the corpus spans {years[0]}–{years[-1]}" if years else None}

    def facet_updates(self, refresh: bool = False) -> tuple[Any, ...]:
        f = self.facets(refresh)
        years = f["years"]
        year_info = f["year_info"] if years else None  # "19 of 201 papers have a year (2014–2024)"
        return (gr.update(visible=bool(years or f["authors"] or f["categories"])),
                gr.update(visible=bool(years), info=year_info), gr.update(visible=bool(years)),
                gr.update(visible=f["authors"]),
                gr.update(visible=bool(f["categories"]), choices=["", *f["categories"]]))

    def placeholder_text(self) -> str:
        """What the empty chat says: how many papers it answers about now (after uploads and removals too)."""
        try:
            n_papers = len(self.pool.retriever.index().papers)
        except RagError:
            n_papers = 0
        return f"**Ask about the {n_papers:,} papers in the index.**  \nEvery claim in an answer cites its papers."

    def placeholder(self) -> Any:
        return gr.update(placeholder=self.placeholder_text())

    def corpus(self) -> tuple[Any, ...]:
        """Counts, embedder and filter availability (page load, after uploads)."""
        return (self.corpus_markdown(), *self.facet_updates())

    def upload(self, files: Any, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        """Corpus files -> the index. Returns (report, corpus counts, 5 filter updates, cleared file input)."""
        items = [f for f in (files if isinstance(files, list | tuple) else [files]) if f]
        if not items:
            return ("Choose one or more corpus files first.", self.corpus_markdown(), *self.facet_updates(), None)
        items, foreign = self.claim_uploads(items)
        if not items:
            return ("\n".join(foreign), self.corpus_markdown(), *self.facet_updates(), None)
        counts = {"done": 0, "total": 0}

        def on_start(total: int) -> None:
            counts["total"] = total
            progress(0.0 if total else 1.0, desc=f"embedding {total} chunks")

        def on_embedded(n: int) -> None:
            counts["done"] += n
            progress((counts["done"], counts["total"] or 1), desc="embedding", unit="chunks")

        progress(0.0, desc="reading files")
        lines: list[str] = list(foreign)
        try:
            with self._ingest_lock:
                result = ingest_uploads(items, self.settings, self.pool.embedder, on_start, on_embedded)
            lines += [f"refused {problem}" for problem in result.refused]
            if result.summary is not None:
                lines += [f"{kind} {text}" if kind != "more" else text for kind, text in record_lines(result.summary)]
                lines.append(summary_text(result.summary))
        except RagError as err:
            lines.append(f"error: {self.public(err)}")
        finally:
            self._discard_uploads(items)
        return ("\n".join(lines), self.corpus_markdown(), *self.facet_updates(refresh=True), None)

    def remove(self, ids: str | None) -> tuple[Any, ...]:
        """Paper ids (spaces, commas or lines between) -> removed from the index (`rag.library.remove_papers`).
        Returns (report, corpus counts, 5 filter updates, cleared id box)."""
        from rag.library import remove_papers

        wanted = [part for part in (ids or "").replace(",", " ").split() if part]
        if not wanted:
            return ("Type the id of a paper to remove (shown on each cited-paper card).", self.corpus_markdown(),
                    *self.facet_updates(), gr.skip())
        try:
            with self._ingest_lock:
                removal = remove_papers(self.settings, wanted)
        except RagError as err:
            return (f"error: {self.public(err)}", self.corpus_markdown(), *self.facet_updates(), gr.skip())
        lines = [f"removed {pid}  {title}" for pid, title in zip(removal.removed, removal.titles)]
        lines.append(f"{removal.chunks_deleted} chunks deleted; {removal.papers_left} papers left")
        return ("\n".join(lines), self.corpus_markdown(), *self.facet_updates(refresh=True), "")

    def claim_uploads(self, items: list[Any]) -> tuple[list[Any], list[str]]:
        """(the files Gradio's /upload handed out, each claimed once; a refusal line for every other one).

        An event may name any file in Gradio's cache (another tab's export, another user's
        upload): only paths from ``upload_file_set`` are read or deleted, and only once."""
        from ui.uploads import display_name

        if self.uploaded is None:
            return items, []
        mine, foreign = [], []
        for item in items:
            path = str(getattr(item, "path", item))
            if path in self.uploaded:
                self.uploaded.discard(path)
                mine.append(item)
            else:
                name = display_name(getattr(item, "orig_name", None) or Path(path).name)
                foreign.append(f"refused {name}: not a file uploaded from this page; upload it again")
        return mine, foreign

    @staticmethod
    def _discard_uploads(items: list[Any]) -> None:
        """Delete Gradio's own cached copy of each upload: uploads are never served back."""
        cache = Path(gr.utils.get_upload_folder()).resolve()
        for item in items:
            path = Path(str(getattr(item, "path", item))).resolve()
            if path.is_file() and cache in path.parents:
                path.unlink(missing_ok=True)

    # ---------------------------------------------------------- examples

    def examples(self, n: int = 4) -> list[str]:
        """Development-set questions about papers in the index, else questions built from titles."""
        try:
            papers = self.pool.retriever.index().papers
        except RagError:
            return []
        out: list[str] = []
        used: set[str] = set()
        if DEV_QUESTIONS.is_file():
            for line in DEV_QUESTIONS.read_text(encoding="utf-8").splitlines():
                row = json.loads(line) if line.strip() else {}
                gold = row.get("gold") or []
                if gold and all(g in papers for g in gold) and not used & set(gold) and row.get("lang", "en") == "en":
                    out.append(row["question"])
                    used |= set(gold)
                if len(out) >= n:
                    return out
        for paper in list(papers.values())[: n - len(out)]:
            out.append(f"What does the paper “{paper.title[:90]}” propose?")
        return out

    # ---------------------------------------------------------- the page

    def build(self) -> gr.Blocks:
        set_defaults(GRADIO)  # no calls home from a local-first app (the Blocks below say so too)
        s = self.settings
        defaults = ChatSettings.defaults(s)
        with gr.Blocks(title="paper-rag", analytics_enabled=False,
                       delete_cache=(3600, 3600)) as demo:
            self.uploaded = demo.upload_file_set
            session = gr.State(None, delete_callback=self.drop_session)
            saved = gr.BrowserState(None, storage_key=SETTINGS_KEY)
            gr.Markdown("## paper-rag · questions over research-paper abstracts\n"
                        "Answers cite their papers as [n]; open a card to see the abstract with the supporting "
                        "sentence highlighted. A dotted underline marks a sentence the cited abstracts do not "
                        "support.", elem_id="intro")
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(
                        # grows with the window; no floating "Chat" label over the scrolled text
                        label="Chat", show_label=False, elem_id="chat", height="72vh", min_height=420,
                        sanitize_html=True, allow_tags=False,
                        render_markdown=True, latex_delimiters=[], line_breaks=False, buttons=["copy"],
                        placeholder=self.placeholder_text(),
                        examples=[{"text": q} for q in self.examples()],
                        feedback_options=("Like", "Dislike"))
                    with gr.Row():
                        question = gr.Textbox(placeholder="Ask a question about the papers…", show_label=False,
                                              scale=5, max_lines=6, elem_id="question", submit_btn=False)
                        ask_btn = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                        stop_btn = gr.Button("Stop", variant="stop", scale=1, elem_id="stop", visible=False)
                    with gr.Row():
                        new_btn = gr.Button("New conversation", size="sm", elem_id="new-conversation")
                        md_dl = gr.DownloadButton("Conversation (.md)", size="sm", elem_id="export-md")
                        bib_dl = gr.DownloadButton("Cited papers (.bib)", size="sm", elem_id="export-bib")
                    with gr.Accordion("Compare papers", open=False, elem_id="compare-panel"):
                        with gr.Row():
                            compare_box = gr.Textbox(placeholder="a search, or paper ids (title:…, arxiv:…)",
                                                     show_label=False, scale=4, max_lines=2, elem_id="compare-query")
                            cited_btn = gr.Button("Cited papers", size="sm", scale=1, elem_id="compare-cited")
                        compare_cols = gr.CheckboxGroup(ComparePanel.choices(), value=list(DEFAULT_COLUMNS),
                                                        label="Columns", elem_id="compare-columns")
                        compare_q = gr.Textbox(placeholder="a column of your own, as a question (optional)",
                                               show_label=False, max_lines=1, elem_id="compare-question")
                        compare_btn = gr.Button("Compare", variant="primary", size="sm", elem_id="compare")
                        compare_out = gr.HTML(elem_id="compare-out")
                        with gr.Row():
                            compare_files = [gr.File(label=name, interactive=False, height=60, elem_id=f"compare-{ext}")
                                             for name, ext in (("table.md", "md"), ("table.csv", "csv"),
                                                               ("papers.bib", "bib"))]
                    with gr.Accordion("Feedback", open=False, elem_id="feedback"):
                        feedback_status = gr.Markdown("Rate an answer with 👍 / 👎 under it.")
                        with gr.Row():
                            comment_box = gr.Textbox(placeholder="Optional comment on your last rating",
                                                     show_label=False, scale=4, max_lines=4)
                            comment_btn = gr.Button("Send comment", size="sm", scale=1)
                        with gr.Row():
                            export_fb = gr.Button("Export feedback (.jsonl)", size="sm")
                            feedback_file = gr.File(label="feedback.jsonl", interactive=False, height=60)
                with gr.Column(scale=1, min_width=280):
                    with gr.Accordion("Settings", open=True, elem_id="settings"):
                        backend = gr.Dropdown(list(backend_names()), value=defaults.backend, label="Backend",
                                              info="auto: Ollama, else the bundled model, else extractive")
                        model = gr.Textbox(value="", label="Model", placeholder="configured default",
                                           info="a bundled model (qwen2.5-coder-1.5b, smollm2-135m) or a model "
                                                "the Ollama / OpenAI-compatible server serves")
                        k = gr.Slider(1, s.retrieval.max_k, value=defaults.k, step=1, label="Papers",
                                      info=f"left at {defaults.k}, a 'which papers' list reads up to "
                                           f"{s.answer.list_papers}")
                        dense_weight = gr.Slider(0, 1, value=defaults.dense_weight, step=0.05,
                                                 label="Hybrid weighting", info="0 = keywords (BM25), 1 = meaning")
                        temperature = gr.Slider(0, 2, value=defaults.temperature, step=0.05, label="Temperature")
                        with gr.Group(visible=False) as filters_box:
                            year_from = gr.Number(label="From year", precision=0, visible=False)
                            year_to = gr.Number(label="To year", precision=0, visible=False)
                            author = gr.Textbox(label="Author", visible=False)
                            category = gr.Dropdown([""], value="", label="Category", allow_custom_value=True,
                                                   visible=False)
                    with gr.Accordion("Corpus", open=True, elem_id="corpus"):
                        corpus_md = gr.Markdown(elem_id="corpus-stats")
                        files = gr.File(label=f"Add corpus files ({' '.join(UPLOAD_TYPES)}; up to "
                                              f"{s.ui.max_upload_mb} MB each)", file_count="multiple",
                                        file_types=UPLOAD_TYPES, elem_id="upload")
                        upload_btn = gr.Button("Add to corpus", size="sm", elem_id="upload-btn")
                        upload_report = gr.Textbox(label="Ingest report", lines=4, max_lines=20,
                                                   interactive=False, elem_id="upload-report")
                        remove_ids = gr.Textbox(label="Remove papers", placeholder="paper ids, e.g. arxiv:2406.06563",
                                                info="the id is on each cited-paper card", max_lines=4,
                                                elem_id="remove-ids")
                        remove_btn = gr.Button("Remove from corpus", size="sm", variant="stop", elem_id="remove-btn")

            panel: list[Any] = [backend, model, k, dense_weight, temperature, year_from, year_to, author, category]
            filters = [filters_box, year_from, year_to, author, category]
            # "multiple": a question sent while one is answered reaches the handler, which says why it is
            # refused (Gradio's default "once" dropped it without a word). The answers-at-once bound is
            # `self.slots`, not Gradio's queue, so a question waiting for a slot says so in the chat.
            ask_args: dict[str, Any] = {"fn": self.ask, "inputs": [question, session, *panel],
                        "outputs": [chatbot, question, md_dl, bib_dl, stop_btn, session],
                        "concurrency_limit": None, "concurrency_id": "answer",
                        "show_progress": "hidden", "trigger_mode": "multiple"}
            question.submit(api_name="ask", **ask_args)
            ask_btn.click(api_visibility="private", **ask_args)
            chatbot.example_select(self.pick_example, None, question, api_visibility="private").then(
                api_visibility="private", **ask_args)
            cited_btn.click(self.compare.cited, [session], compare_box, api_visibility="private", queue=False)
            compare_btn.click(self.compare.compare, [compare_box, compare_cols, compare_q, k, session],
                              [compare_out, *compare_files], api_name="compare", concurrency_limit=None,
                              show_progress="hidden")
            # not queued: it must get through while the answer holds its concurrency slot
            stop_btn.click(self.stop, [session], None, queue=False, api_name="stop")
            new_btn.click(self.new_conversation, [session], [chatbot, md_dl, bib_dl, comment_box, session],
                          api_name="new_conversation")
            chatbot.clear(self.new_conversation, [session], [chatbot, md_dl, bib_dl, comment_box, session],
                          api_visibility="private")  # the chat's own bin icon
            chatbot.like(self.rate, [session], [feedback_status, session], api_name="rate")
            comment_btn.click(self.comment, [comment_box, session], [feedback_status, comment_box, session],
                              api_name="comment")
            export_fb.click(self.export_feedback, [session], [feedback_file, feedback_status],
                            api_name="export_feedback")
            upload_btn.click(self.upload, [files], [upload_report, corpus_md, *filters, files], api_name="upload",
                             concurrency_limit=1, concurrency_id="ingest").then(
                self.placeholder, None, chatbot, api_visibility="private", queue=False)
            remove_btn.click(self.remove, [remove_ids], [upload_report, corpus_md, *filters, remove_ids],
                             api_name="remove_papers", concurrency_limit=1, concurrency_id="ingest").then(
                self.placeholder, None, chatbot, api_visibility="private", queue=False)
            # settings survive a reload of the tab (browser localStorage, this browser only)
            for c in panel:
                c.change(lambda *v: list(v), panel, saved, api_visibility="private", show_progress="hidden",
                         queue=False)
            demo.load(self.restore_settings, [saved], panel, api_visibility="private", queue=False)
            demo.load(self.corpus, None, [corpus_md, *filters], api_name="corpus")
            demo.load(self.placeholder, None, chatbot, api_visibility="private", queue=False)
        return demo

    def restore_settings(self, saved: Any) -> list[Any]:
        d = ChatSettings.defaults(self.settings)
        keys = ["backend", "model", "k", "dense_weight", "temperature", "year_from", "year_to", "author",
                "category"]
        if not isinstance(saved, list) or len(saved) != len(keys):
            return [getattr(d, key) for key in keys]
        restored = ChatSettings.parse(self.settings, *saved)
        return [getattr(restored, key) for key in keys]

    # ---------------------------------------------------------- launching

    def launch_options(self, host: str | None = None, port: int | None = None, share: bool = False) -> dict[str, Any]:
        """Keyword arguments for ``Blocks.launch``: loopback by default, auth only if configured, and
        `ui.guard.RequestGuard` in front (Host names, other pages' origins, request size, login on Gradio's
        open routes)."""
        from starlette.middleware import Middleware

        ui = self.settings.ui
        policy = HostPolicy.for_bind(host or ui.host, ui.allowed_hosts, share)
        origins = OriginPolicy.of(ui.allowed_origins)
        options: dict[str, Any] = {
            "app_kwargs": {"middleware": [Middleware(RequestGuard, policy=policy, origins=origins)]},
            "server_name": host or ui.host, "server_port": port or ui.port, "share": share,
            "max_file_size": f"{ui.max_upload_mb}mb", "auth": parse_auth(ui.auth),
            "allowed_paths": [], "show_error": False, "ssr_mode": False, "pwa": False, "mcp_server": False,
            "theme": theme(), "css": render.CSS, "footer_links": ["api", "settings"],
        }
        if options["auth"]:
            options["auth_message"] = "paper-rag: sign in (RAG_UI__AUTH)"
        return options

    def queued(self) -> gr.Blocks:
        """The page, built, with its queue bounded by ``RAG_UI__CONCURRENCY``."""
        demo = self.build()
        concurrency = self.settings.ui.concurrency
        demo.queue(default_concurrency_limit=concurrency, max_size=max(64, 16 * concurrency))
        return demo

    def launched(self, **kwargs: Any) -> gr.Blocks:
        """Build, queue and launch; returns the Blocks (``prevent_thread_lock`` passes through).

        Gradio's app gets `ui.guard.CorsGate` around it (outside Gradio's own CORS middleware, which
        is only reachable once launched): other pages read nothing unless RAG_UI__ALLOWED_ORIGINS lists them."""
        demo = self.queued()
        options = self.launch_options(kwargs.pop("host", None), kwargs.pop("port", None), kwargs.pop("share", False))
        block = not kwargs.pop("prevent_thread_lock", False)
        demo.launch(**options, **kwargs, prevent_thread_lock=True)
        app = demo.server_app
        if app is not None:
            app.middleware_stack = CorsGate(  # type: ignore[assignment]  # an ASGI app, as Starlette's
                app.middleware_stack or app.build_middleware_stack(), OriginPolicy.of(self.settings.ui.allowed_origins))
        if block:
            demo.block_thread()
        return demo


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``'user:password'`` -> (user, password); None or empty -> no login."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise RagError("RAG_UI__AUTH must look like 'user:password'", "set RAG_UI__AUTH=user:password, or unset it")
    return user, password


def theme() -> gr.themes.Base:
    """System fonts only: the page loads nothing from a remote host (no Google Fonts)."""
    return gr.themes.Soft(primary_hue="indigo", font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "SFMono-Regular", "monospace"])


def build_app(settings: Settings | None = None) -> gr.Blocks:
    return WebApp(settings).build()
