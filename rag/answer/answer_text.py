"""The answer step's text in and out: the question cleaned (`clean_question`), what the user gave
(`given`), the stage line, and the model's reply cleaned: leaked prompt text (`scrub`), citation
markers (`parse_citations`), a one-line query (`one_line_reply`), a degenerate loop (`repeats_itself`).

Left out: the prompt itself (`rag.answer.prompts`), the answer step that uses these (`rag.answer.answerer`), the
check of what the sentences say (`rag.answer.support`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.answer import language, prompts
from rag.answer.claims import CITATION_MARKER
from rag.index.chunking import split_sentences
from rag.search.retrieval import clean_query

_NAMED_SOURCE = re.compile(r"(?<!\[)\b(?:[Aa]bstract|[Ss]ource)\s+#?(\d{1,2})\b(?!\s*[%.]\d)(?!\])")
_PLACEHOLDER = re.compile(r"\[(?:n|N|x|X|\?|\.\.\.|number)\]")  # a template's marker copied literally


def given(question: str, query: str, lang: str) -> str:
    """What the user gave, which an answer sentence is checked for adding to: the question, and the
    retrieval query when it is the user's words (English; a condensed follow-up). A translation is the
    model's, and may already hold an answer it made up ("... Skywork-MoE has 32 experts").

    >>> given("Wie viele?", "How many? It has 32.", "de")
    'Wie viele?'
    >>> given("How many?", "How many? Skywork-MoE", "en").splitlines()
    ['How many?', 'How many? Skywork-MoE']
    """
    return question if lang != language.ENGLISH else f"{question}\n{query}"


def stage_reading(papers: int) -> str:
    """The stage line once the papers are chosen.

    >>> stage_reading(1), stage_reading(3)
    ('reading 1 paper', 'reading 3 papers')
    """
    return f"reading {papers} paper{'s' if papers != 1 else ''}"


def clean_question(question: str) -> str:
    """`rag.search.retrieval.clean_query`'s rules for a question: empty or too long is an `InputError`."""
    return clean_query(question, "question")[0]


def parse_citations(text: str, valid: Sequence[int]) -> tuple[str, list[int], int]:
    """Citation markers -> (text without invalid markers, valid numbers in order, invalid count).

    >>> parse_citations("A [1]. B [2, 7]. C [1-2]. D [n].", [1, 2])
    ('A [1]. B [2]. C [1][2]. D.', [1, 2], 2)
    >>> parse_citations("It is described in Abstract 1, which introduces DRA.", [1])
    ('It is described in [1], which introduces DRA.', [1], 0)
    """
    text = _NAMED_SOURCE.sub(r"[\1]", text)  # "Abstract 1": the prompt's numbering, written out
    valid_set, cited = set(valid), []
    invalid = len(_PLACEHOLDER.findall(text))
    text = _PLACEHOLDER.sub("", text)

    def replace(m: re.Match[str]) -> str:
        nonlocal invalid
        numbers: list[int] = []
        for part in re.split(r"\s*[,;]\s*", m.group(1)):
            bounds = [int(x) for x in re.split(r"\s*[-–]\s*", part)]
            if len(bounds) == 2 and 0 < bounds[1] - bounds[0] < 20:
                numbers += list(range(bounds[0], bounds[1] + 1))
            else:
                numbers += bounds
        kept = [n for n in numbers if n in valid_set]
        invalid += len(numbers) - len(kept)
        for n in kept:
            if n not in cited:
                cited.append(n)
        return "".join(f"[{n}]" for n in dict.fromkeys(kept))

    out = CITATION_MARKER.sub(replace, text)
    out = re.sub(r"[ \t]+([.,;:])", r"\1", re.sub(r"[ \t]{2,}", " ", out)).strip()
    return out, cited, invalid


def scrub(text: str, delimiter: str = "") -> tuple[str, list[str]]:
    """(text without the sentences that leaked from the prompt, those sentences).

    >>> scrub("PLaMo has 100B parameters [1]. <<<SOURCE-ab12 Question: how many? Source: [n]")
    ('PLaMo has 100B parameters [1].', ['<<<SOURCE-ab12 Question: how many?', 'Source: [n]'])
    """
    markers = [*prompts.PROMPT_MARKERS, *([delimiter] if delimiter else [])]
    if not any(m in text for m in markers):
        return text.strip(), []
    kept, removed = [], []
    text = re.sub(r"(<<<)", r"\n\1", re.sub(r"(>>>)", r"\1\n", text))  # a fence is never part of a sentence
    for line in text.splitlines():
        parts = split_sentences(line) if line.strip() else []
        bad = [p for p in parts if any(m in p for m in markers)]
        removed += bad
        good = [p for p in parts if p not in bad]
        if good or not line.strip():
            kept.append(" ".join(good))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip(), removed


def one_line_reply(text: str, limit: int = 300) -> str | None:
    """The first line of a model's reply, unquoted, if it is a plausible query.

    >>> one_line_reply('"Skywork-MoE number of experts"\\nExplanation: ...')
    'Skywork-MoE number of experts'
    """
    line = text.strip().splitlines()[0].strip().strip('"\'`') if text.strip() else ""
    line = re.sub(r"^(?:standalone )?(?:search )?query:\s*", "", line, flags=re.I)
    return line if 3 <= len(line) <= limit else None


def repeats_itself(text: str) -> bool:
    """A degenerate loop: the same sentence three times, or the last 40 chars thrice in the last 240."""
    sentences = [s.strip().lower() for s in split_sentences(text) if len(s) > 15]
    if any(sentences.count(s) >= 3 for s in set(sentences)):
        return True
    tail = text[-40:]
    return len(text) > 240 and len(tail.strip()) > 10 and text[-240:].count(tail) >= 3
