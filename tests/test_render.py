"""One answer, every output format: the terminal (`rag.render.terminal`), Markdown (the API's message,
the conversation export: `rag.render.markdown`), the API's JSON (`rag.render.json`) and the web
chat's HTML (``ui.render``) show the same flagged sentences with the same flags, the same count of
them, the same cited numbers with the same evidence, and the same papers also retrieved: each is
read from one `rag.render.view.AnswerView`, so a format that walks the answer its own way fails here.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from rich.console import Console

from rag.answer.answer_result import Answer, Citation
from rag.answer.support import AnswerSentence, Evidence
from rag.index.corpus import Paper
from rag.render.json import answer_summary
from rag.render.markdown import answer_message, conversation_markdown, sources_markdown
from rag.render.terminal import answer_lines, answer_text
from rag.render.view import MARKS, AnswerView
from ui import render

ZQRT = Paper("ZQRT: Sparse Kernels", "ZQRT is quick. It uses sparse kernels.", authors=["A B"], year=2024,
             arxiv_id="2401.00001")
OTHER = Paper("Other paper", "Some abstract sentence here.")
QUICK = AnswerSentence("ZQRT is quick [1].", [1], True, 0.91)
CHEESE = AnswerSentence("It is made of cheese [1].", [1], False, 0.42)
MOON = AnswerSentence("Bananas grow on the moon.", [], False, 0.0)
POINTER = AnswerSentence("This is described in [1].", [1], True, 0.0, claim=False)
UNSTATED = AnswerSentence("The abstracts do not state its speed.", [], False, 0.0, claim=False)  # no claim: no flag


def answer(text: str, sentences: list[AnswerSentence]) -> Answer:
    evidence = [Evidence(1, ZQRT.id, "ZQRT is quick.", 0.91, QUICK.text),
                Evidence(1, ZQRT.id, "It uses sparse kernels.", 0.42, CHEESE.text)]
    return Answer("q?", "q", text, backend="llamacpp", model="m", sentences=sentences,
                  citations=[Citation(1, ZQRT, True, 0.8, evidence)], also_retrieved=[Citation(2, OTHER, False, 0.3)])


ANSWERS = {
    "flagged": answer(f"{QUICK.text} {CHEESE.text}\n{MOON.text} {POINTER.text} {UNSTATED.text}",
                      [QUICK, CHEESE, MOON, POINTER, UNSTATED]),
    # the markers after a line break: the checked sentence has a space there
    "line break": answer("ZQRT is quick.\n[1] It is made of cheese [1].",
                         [AnswerSentence("ZQRT is quick. [1]", [1], True, 0.9), CHEESE]),
    # a checked sentence the text no longer holds: its flag is still shown
    "rewritten": answer(f"Something else entirely. {CHEESE.text}",
                        [AnswerSentence("Not in the text.", [1], False, 0.1), CHEESE]),
    "clean": answer(QUICK.text, [QUICK]),
}


def shown(a: Answer) -> dict[str, Any]:
    """What each format shows of ``a``: its flagged (sentence, flag) pairs and their count per format."""
    sentences = [s.text for s in a.sentences]

    def marked_in(text: str, mark: str) -> list[tuple[str, str]]:
        flags = "|".join(map(re.escape, ("unsupported", "uncited")))
        pattern = re.escape(mark).replace(re.escape("{flag}"), f"({flags})")
        pairs = []
        for s in sentences:
            written = r"\s+".join(map(re.escape, s.split()))
            pairs += [(s, m) for m in re.findall(f"{written} {pattern}", text)]
        assert len(pairs) == len(re.findall(pattern, text)), "a mark after no checked sentence"
        return pairs

    terminal = answer_text(a)
    underlined = [terminal.plain[span.start:span.end] for span in terminal.spans if span.style == "underline yellow"]
    marks = [terminal.plain[span.start:span.end].strip(" []") for span in terminal.spans if span.style == "bold yellow"]
    lines = [line.text.plain for line in answer_lines(a)]
    page = render.render_answer(a)
    badged = re.findall(r'<span class="rag-unsupported"[^>]*>(.*?)</span><span class="rag-badge"[^>]*>(\w+)</span>',
                        page)
    export = conversation_markdown([(a.question, a)], [])
    return {
        "terminal": list(zip(underlined, marks)),
        "plain": marked_in(answer_message(a, markdown=False), MARKS["plain"]),
        "markdown": marked_in(answer_message(a, markdown=True), MARKS["markdown"]),
        "export": marked_in(export, MARKS["markdown"]),
        "html": [(html.unescape(re.sub(r"<[^>]+>", "", body)), flag) for body, flag in badged],
        "json": answer_summary(a, 0.5)["unsupported_sentences"],  # the sentences, without their flags
        "counts": {"terminal": next((int(m[1]) for x in lines if (m := re.match(r"(\d+) of \d+ sentences", x))), 0),
                   "html": int(m[1]) if (m := re.search(r"(\d+) of \d+ sentences not supported", page)) else 0,
                   "export": int(m[1]) if (m := re.search(r"> (\d+) of \d+ sentences", export)) else 0},
    }


def shown_flags(a: Answer) -> list[tuple[str, str]]:
    return [(p.sentence.text, p.flag) for p in AnswerView.of(a).segments if p.flag and p.sentence is not None]


def normalised(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(" ".join(text.split()), flag) for text, flag in pairs]


@pytest.mark.parametrize("name", ANSWERS)
def test_every_format_flags_the_same_sentences(name: str) -> None:
    a = ANSWERS[name]
    facts = shown(a)
    expected = normalised(shown_flags(a))
    assert expected or name == "clean"
    for fmt in ("terminal", "plain", "markdown", "export", "html"):
        assert normalised(facts[fmt]) == expected, fmt
    assert normalised([(s, "") for s in facts["json"]]) == [(text, "") for text, _ in expected]
    assert set(facts["counts"].values()) == {len(expected)}


def test_the_flags_are_the_claims_no_cited_abstract_supports() -> None:
    assert shown_flags(ANSWERS["flagged"]) == [(CHEESE.text, "unsupported"), (MOON.text, "uncited")]
    abstained = ANSWERS["flagged"]
    abstained = Answer(**{**abstained.__dict__, "abstained": True})
    assert AnswerView.of(abstained).flagged == [] and shown(abstained)["html"] == []  # an abstention flags nothing


def test_the_text_keeps_its_line_breaks_around_a_checked_sentence() -> None:
    a = ANSWERS["line break"]
    assert answer_message(a, markdown=False) == "ZQRT is quick.\n[1] It is made of cheese [1]. [unsupported]"
    assert "ZQRT is quick.<br>" in render.render_answer(a)


def test_every_format_cites_the_same_papers_with_the_same_evidence() -> None:
    a = ANSWERS["flagged"]
    out = Console(width=200, record=True)
    for line in answer_lines(a):
        out.print(line.text)
    printed = out.export_text()
    page = render.render_answer(a)
    summary = answer_summary(a, 0.5)
    evidence = [e.sentence for e in a.citations[0].evidence]
    assert re.findall(r"^\[(\d+)\] ", printed, re.M) == ["1"]
    assert re.findall(r'rag-num">\[(\d+)\]', page) == ["1"]
    assert re.findall(r"^- \[(\d+)\] ", sources_markdown(a), re.M) == ["1"]
    assert [c["number"] for c in summary["citations"]] == [1]
    assert re.findall(r"evidence \(\d\.\d\d\): (.*)", printed) == evidence
    assert re.findall(r"<mark[^>]*>(.*?)</mark>", page) == evidence
    assert [e["sentence"] for e in summary["citations"][0]["evidence"]] == evidence
    assert "also retrieved: [2] Other paper" in printed and "Also retrieved, not cited (1)" in page
    assert [c["number"] for c in summary["also_retrieved"]] == [2]
