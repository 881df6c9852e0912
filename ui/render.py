"""`rag.answer.answer_result.Answer` -> the HTML of one chat message: answer text, banners, source cards,
read from its `rag.render.view.AnswerView` (which sentences are flagged, the incomplete answer's
reason, the cited numbers), as the terminal, Markdown and JSON formats are (`rag.render`).

Everything that comes from a model, a corpus file or a user is escaped with
``html.escape`` *before* our own markup is added, and the finished fragment goes
through ``nh3.clean`` allowing only the tags and attributes written here (defence in
depth: a bug in this module cannot let a ``<script>`` or a remote ``<img>`` through).
Links are kept only when they are http(s). The fragment has no blank lines, so the
chat's Markdown renderer treats it as one raw HTML block and interprets nothing in it.

Example (what a cited answer looks like, shortened)::

    <div class="rag-answer">
      <div class="rag-text">"X improves Y." <span class="rag-cite">[1]</span></div>
      <div class="rag-cards"><div class="rag-card">[1] Title · score 0.81 · arXiv · <code>arxiv:2406.06563</code>
        <details><summary>Abstract</summary>… <mark>the supporting sentence</mark> …</details>
        <details class="rag-similar"><summary>Similar papers (3)</summary><ul><li>…</li></ul></details>
      </div></div>
      <details class="rag-also"><summary>Also retrieved (3)</summary>…</details>
      <div class="rag-meta">extractive · sentence selection · retrieval 0.02 s · …</div>
    </div>

Left out: anything about retrieval, prompting or checking (that is `rag.answer.answerer`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import nh3

from rag.answer.answer_result import Answer, Citation
from rag.answer.answerer import STAGE_SEARCH as FIRST_STAGE
from rag.answer.support import AnswerSentence
from rag.index.corpus import Paper
from rag.render.view import UNSUPPORTED, AnswerView, flag_of
from rag.search.retrieval import SCORE_SCALE, PaperHit

ALLOWED_TAGS = {"div", "span", "p", "br", "a", "details", "summary", "mark", "small", "strong", "em",
                "ol", "ul", "li", "code"}
ALLOWED_ATTRIBUTES = {"*": {"class", "title"}, "a": {"href", "target"}}
_MARKER = re.compile(r"\[(\d+)\]")

CSS = """
.rag-answer { line-height: 1.5; }
.rag-text { white-space: normal; }
.rag-cite { color: var(--color-accent); font-weight: 600; font-size: 0.85em; }
.rag-unsupported { text-decoration: underline dotted #c2410c; text-decoration-thickness: 2px;
  text-underline-offset: 3px; }
.rag-badge { display: inline-block; font-size: 0.7em; padding: 0 0.4em; margin-left: 0.25em;
  border-radius: 0.6em; background: #ffedd5; color: #9a3412; vertical-align: middle; }
.rag-banner { border-radius: 6px; padding: 0.35em 0.7em; margin: 0.3em 0; font-size: 0.9em; }
.rag-banner.warn { background: #fef3c7; color: #78350f; border-left: 4px solid #d97706; }
.rag-banner.error { background: #fee2e2; color: #7f1d1d; border-left: 4px solid #dc2626; }
.rag-banner.info { background: #e0f2fe; color: #0c4a6e; border-left: 4px solid #0284c7; }
.rag-cards { margin-top: 0.6em; }
.rag-cards-title { font-size: 0.8em; text-transform: uppercase; letter-spacing: 0.05em; opacity: 0.7; }
.rag-card { border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 0.4em 0.6em;
  margin: 0.35em 0; }
.rag-card-head { font-weight: 600; }
.rag-card-meta { font-size: 0.8em; opacity: 0.85; }
.rag-card-meta a { margin-right: 0.5em; }
.rag-card details summary, .rag-also summary { cursor: pointer; font-size: 0.85em; }
.rag-similar ul { margin: 0.2em 0; font-size: 0.9em; }
.rag-abstract { font-size: 0.9em; margin-top: 0.3em; }
.rag-abstract mark { background: #fde68a; color: inherit; padding: 0 1px; }
.rag-also { margin-top: 0.4em; font-size: 0.9em; }
.rag-meta { font-size: 0.75em; opacity: 0.7; margin-top: 0.5em; }
.rag-pending { opacity: 0.7; font-style: italic; }
.rag-stage { font-size: 0.85em; margin-bottom: 0.3em; }
.rag-question { white-space: pre-wrap; }
"""


def esc(text: object) -> str:
    """Escape text for HTML content and attribute values (quotes included)."""
    return html.escape(str(text), quote=True)


def clean(fragment: str) -> str:
    """Drop every tag and attribute we did not write ourselves (nh3 = the ammonia sanitizer)."""
    return nh3.clean(fragment, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes={"http", "https"},
                     link_rel="noopener noreferrer nofollow", strip_comments=True)


def _flat(fragment: str) -> str:
    """No newlines: a blank line would end the Markdown HTML block."""
    return fragment.replace("\r", " ").replace("\n", " ")


def _text_html(text: str, cited: Iterable[int] = ()) -> str:
    """Escaped text, newlines as <br>, citation markers styled."""
    numbers = set(cited)
    out = esc(text).replace("\n", "<br>")
    return _MARKER.sub(lambda m: f'<span class="rag-cite">[{m.group(1)}]</span>'
                       if not numbers or int(m.group(1)) in numbers else m.group(0), out)


# ------------------------------------------------------------------ links


def safe_href(url: str) -> str | None:
    """An http(s) URL with a host, else None. Bare ``www.`` / ``github.com/`` links get https://.

    >>> safe_href("javascript:alert(1)"), safe_href("github.com/a/b"), safe_href("localhost:8000/x")
    (None, 'https://github.com/a/b', 'https://localhost:8000/x')
    """
    url = url.strip()
    if re.match(r"^[a-z][a-z0-9+.-]*:(?!\d)", url, re.I) and not re.match(r"^https?://", url, re.I):
        return None  # javascript:, data:, mailto:, file: ...
    if not re.match(r"^https?://", url, re.I):
        url = "https://" + url
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname or any(c in url for c in "<>\"' "):
        return None
    return url


def link_label(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower().removeprefix("www.")
    if host == "arxiv.org":
        return "arXiv"
    if host in {"doi.org", "dx.doi.org"}:
        return "DOI"
    if host in {"github.com", "gitlab.com", "huggingface.co"}:
        return f"code ({host})" if host != "github.com" else "code"
    return host or "link"


def links_html(links: Iterable[str]) -> str:
    out = []
    for url in links:
        href = safe_href(url)
        if href:
            out.append(f'<a href="{esc(href)}" target="_blank" title="{esc(href)}">{esc(link_label(href))}</a>')
    return " ".join(out)


# ------------------------------------------------------------------ pieces


def highlight(abstract: str, sentences: Iterable[str], titles: dict[str, str] | None = None) -> str:
    """The abstract escaped, with each evidence sentence wrapped in <mark>.

    >>> highlight("A b. C <d>.", ["C <d>."])
    'A b. <mark>C &lt;d&gt;.</mark>'
    """
    spans: list[tuple[int, int, str]] = []
    for sentence in dict.fromkeys(s.strip() for s in sentences if s.strip()):
        start = abstract.find(sentence)
        if start >= 0:
            spans.append((start, start + len(sentence), sentence))
    spans.sort()
    out, cursor = [], 0
    for start, end, sentence in spans:
        if start < cursor:  # overlapping evidence: extend the previous mark instead of nesting
            continue
        out.append(esc(abstract[cursor:start]))
        title = (titles or {}).get(sentence)
        attr = f' title="{esc(title)}"' if title else ""
        out.append(f"<mark{attr}>{esc(abstract[start:end])}</mark>")
        cursor = end
    out.append(esc(abstract[cursor:]))
    return "".join(out)


def folded_list(css: str, summary: str, items: list[str]) -> str:
    """Papers as a list folded under ``summary`` (a ``<details>`` of class ``css``); empty when none."""
    if not items:
        return ""
    return f'<details class="{css}"><summary>{summary} ({len(items)})</summary><ul>{"".join(items)}</ul></details>'


def paper_item(label: str, paper: Paper, score: str, extra: str = "") -> str:
    """One folded-list line: label and title, then the score, the first link and ``extra`` (HTML)."""
    first = links_html(paper.links[:1])
    return f'<li>{label}{esc(paper.title)} <small>· {score}{" · " + first if first else ""}{extra}</small></li>'


def similar_html(hits: Sequence[PaperHit]) -> str:
    """The papers nearest to a cited one (`rag.library.similar_papers`), folded under the card."""
    return folded_list("rag-similar", "Similar papers", [
        paper_item("", h.paper, f"similarity {h.score:.2f}", f" · <code>{esc(h.paper.id)}</code>") for h in hits])


def card_html(c: Citation, similar: Sequence[PaperHit] = ()) -> str:
    """One cited paper: number, title, links, retrieval score, id; abstract with evidence and the
    similar papers on expand."""
    paper = c.paper
    year = f" <small>({esc(paper.year)})</small>" if paper.year else ""
    authors = ", ".join(paper.authors[:4]) + (" et al." if len(paper.authors) > 4 else "")
    meta = [esc(authors)] if authors else []
    meta.append(f'<span title="{esc(SCORE_SCALE)}">retrieval score {c.score:.3f}</span>')
    links = links_html(paper.links)
    if links:
        meta.append(links)
    meta.append(f"<code>{esc(paper.id)}</code>")
    titles = {e.sentence.strip(): f"supports: {e.answer_sentence} (support {e.score:.2f})" for e in c.evidence}
    n_marks = len({e.sentence.strip() for e in c.evidence})
    summary = f"Abstract, {n_marks} supporting sentence{'s' if n_marks != 1 else ''} highlighted" if n_marks \
        else "Abstract"
    return (f'<div class="rag-card"><div class="rag-card-head"><span class="rag-num">[{c.number}]</span> '
            f'<span class="rag-title">{esc(paper.title)}</span>{year}</div>'
            f'<div class="rag-card-meta">{" · ".join(meta)}</div>'
            f'<details><summary>{summary}</summary><div class="rag-abstract">'
            f"{highlight(paper.abstract, [e.sentence for e in c.evidence], titles)}</div></details>"
            f"{similar_html(similar)}</div>")


def also_html(citations: list[Citation]) -> str:
    return folded_list("rag-also", "Also retrieved, not cited", [
        paper_item(f"[{c.number}] ", c.paper, f"score {c.score:.3f}") for c in citations])


def sentence_html(s: AnswerSentence, cited: Iterable[int], text: str | None = None) -> str:
    """A checked sentence (``text``: as the answer writes it, default its own): as written, or
    underlined with its badge when `rag.render.view.flag_of` flags it."""
    body = _text_html(s.text if text is None else text, cited)
    flag = flag_of(s)
    if flag is None:
        return body
    if flag == UNSUPPORTED:
        why = f"no sentence of the cited abstracts supports this (best support {s.score:.2f})"
    else:
        why = "this sentence cites no paper"
    return (f'<span class="rag-unsupported" title="{esc(why)}">{body}</span>'
            f'<span class="rag-badge" title="{esc(why)}">{flag}</span>')


def answer_text_html(view: AnswerView) -> str:
    """The answer with flagged sentences marked, keeping the text between sentences (`AnswerView.segments`)."""
    return "".join(_text_html(p.text, view.cited_numbers) if p.sentence is None or p.flag is None
                   else sentence_html(p.sentence, view.cited_numbers, p.text) for p in view.segments)


def banners_html(view: AnswerView, notes: Sequence[str] | None = None) -> str:
    """Notes (information: which backend answers and why, what a filter left out), then the
    incomplete, abstained and dropped-citation banners. ``notes``: the ones to show (a session
    shows each once: `rag.notices.Notices`); None: all of the answer's."""
    answer = view.answer
    out = []
    notes = answer.notes if notes is None else notes
    if notes:
        out.append(f'<div class="rag-banner info"><strong>Note:</strong> {"<br>".join(esc(n) for n in notes)}</div>')
    if view.incomplete_reason is not None:
        out.append(f'<div class="rag-banner error"><strong>Incomplete answer:</strong> '
                   f'{_text_html(view.incomplete_reason)}</div>')
    if answer.abstained:
        out.append(f'<div class="rag-banner warn"><strong>Abstained:</strong> the papers do not answer this'
                   f'{" (" + esc(answer.abstain_reason) + ")" if answer.abstain_reason else ""}.</div>')
    if answer.invalid_citations:
        n = answer.invalid_citations
        out.append(f'<div class="rag-banner info">{n} citation{"s" if n != 1 else ""} to no listed paper '
                   f'removed.</div>')
    if view.flagged:
        out.append(f'<div class="rag-banner warn">{len(view.flagged)} of {view.sentence_count} sentences not '
                   f"supported by a cited abstract (dotted underline).</div>")
    return "".join(out)


def meta_html(answer: Answer) -> str:
    t = answer.timings

    def sec(key: str) -> str:
        return f"{t[key]:.2f} s" if key in t else "–"

    return (f'<div class="rag-meta">answered by {esc(answer.backend)} · {esc(answer.model)} · '
            f'retrieval {sec("retrieval_s")} · first token {sec("ttft_s")} · total {sec("total_s")}</div>')


# ------------------------------------------------------------------ whole messages


def render_answer(answer: Answer, notes: Sequence[str] | None = None,
                  similar: dict[str, list[PaperHit]] | None = None) -> str:
    """The final chat message for one answer; ``notes`` as in `banners_html`; ``similar``: paper id ->
    its nearest papers, for the cards."""
    view = AnswerView.of(answer)
    parts = ['<div class="rag-answer">', banners_html(view, notes),
             f'<div class="rag-text">{answer_text_html(view)}</div>']
    if answer.citations:
        parts.append('<div class="rag-cards"><div class="rag-cards-title">Cited papers</div>')
        parts += [card_html(c, (similar or {}).get(c.paper.id, ())) for c in answer.citations]
        parts.append("</div>")
    parts += [also_html(answer.also_retrieved), meta_html(answer), "</div>"]
    return clean(_flat("".join(parts)))


def render_streaming(text: str, stage: str = FIRST_STAGE, seconds: float | None = None) -> str:
    """The message while an answer is made: the stage it is at with the seconds since the question
    (``searching the papers · 3 s``), then the raw text so far, escaped."""
    elapsed = f" · {seconds:.0f} s" if seconds is not None else ""
    body = _text_html(text) if text else ""
    return clean(_flat(f'<div class="rag-answer"><div class="rag-stage rag-pending">{esc(stage)}…{elapsed}</div>'
                       f'<div class="rag-text">{body}<span class="rag-pending"> ▍</span></div></div>'))


def render_stopped(text: str) -> str:
    """What is left of an answer stopped by its user: the text so far, marked as stopped."""
    body = f'<div class="rag-text">{_text_html(text)}</div>' if text.strip() else ""
    return clean(_flat(f'<div class="rag-answer">{body}<div class="rag-banner info"><strong>Stopped:</strong> '
                       "the answer was stopped before it was finished and checked.</div></div>"))


def render_error(message: str, title: str = "Could not answer") -> str:
    return clean(_flat(f'<div class="rag-answer"><div class="rag-banner error"><strong>{esc(title)}:</strong> '
                       f"{_text_html(message)}</div></div>"))


def render_question(question: str) -> str:
    return clean(_flat(f'<div class="rag-question">{_text_html(question)}</div>'))
