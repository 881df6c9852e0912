"""Answer sentences checked against the abstracts: what a sentence claims, which numbered paper
supports it, and the abstract sentence that is its evidence.

An answer is cut into sentences, each keeping the citation markers written after its full stop.
A sentence claims the words it adds to the question, stemmed ("introduced" is "introduces"); one
that adds none (a restatement, "Yes.", a pointer such as "This is described in [1].") or says the
abstracts do not hold something is no claim: kept, not checked, its bare markers named by title.
A claim is scored against every sentence of each numbered abstract: embedding cosine blended with
the share of its added words found there (local and deterministic, no LLM judge). A number it adds
must be in the paper; a claim in another language is also scored by its names and numbers
(`rag.answer.claims.anchors`: they read the same in every language); a claim that names a paper's title may be
supported by the title. A claim keeps the markers the model wrote when one of them supports it;
markers only at its end are corrected (``answer.attribute``): the unsupported ones dropped when
another supports it, all replaced by the best-supporting paper when none does; else it is marked
unsupported. When the question asks which paper, each cited paper's first mention gets its title.

Left out: generation, prompts and abstention from retrieval (`rag.answer.answerer`); what a sentence claims
(its words, numbers, names and citation markers: `rag.answer.claims`); what kind of question was asked and
writing titles beside markers (`rag.answer.question_kinds`).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag.answer.claims import (
    anchors,
    answer_sentences,
    claimed_roles,
    content_words,
    held_form,
    holds,
    mentions,
    new_words,
    number_roles,
    numbers_held,
    numbers_in,
    says_no_answer,
    sentence_citations,
    specifics,
    spells_out,
    states_a_value,
    stems,
    strip_citations,
    with_citations,
)
from rag.answer.evidence import evidence_text, sentences_of
from rag.answer.language import is_english
from rag.answer.question_kinds import (
    asked_property,
    asks_for_content,
    asks_for_number,
    asks_for_papers,
    name_papers,
    names_paper,
    names_title,
    title_markers,
    unmentioned_property,
)
from rag.index.corpus import Paper
from rag.index.embeddings import Embedder
from rag.settings import AnswerSettings

# a sentence whose citation markers all come at its end ("... 146B parameters [1][2].")
_TRAILING_MARKERS = re.compile(r"[^\[]*?(?:\s*\[\d+\])+\s*[.!?\u3002]?\s*")


# ------------------------------------------------------------------ result objects

# (claim without its markers, the paper's number, its best evidence sentence) -> does the paper state the claim?
Judge = Callable[[str, int, str], bool]


@dataclass
class Evidence:
    number: int
    paper_id: str
    sentence: str          # the abstract sentence that supports the answer sentence
    score: float
    answer_sentence: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class AnswerSentence:
    text: str
    citations: list[int]
    supported: bool
    score: float  # best evidence score (0 when nothing is cited)
    attributed: bool = False  # the citations were set by the evidence check, not written by the model
    claim: bool = True        # False: the sentence says the abstracts do not hold something
    entailed: bool | None = None  # the judge's word on its cited paper (None: not asked)
    specifics: list[str] = field(default_factory=list)  # numbers and names it adds (or gives, held by no paper)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ------------------------------------------------------------------ the check


SAID_NO = "the model said the papers do not answer it"
RESTATED = "the answer only restated the question"
NO_VALUE = "the question asks for a value and the answer states none"
NONE_SUPPORTED = "no retrieved abstract states what the answer claimed"


def unanswered(sentences: Sequence[AnswerSentence], question: str, query: str, english: bool) -> str | None:
    """Why a checked answer is an abstention (its reason), or None when it answers:

    - it only says the abstracts do not hold something, or says so first (`SAID_NO`);
    - it claims nothing and the query asks for a thing or a value (`RESTATED`: "The peak learning rate
      turned out to be optimal for the 124M model [1]." adds nothing);
    - none of its claims is supported (`NONE_SUPPORTED`);
    - the (English) question asks for a value and no supported claim states a number (`NO_VALUE`: "What
      accuracy does SEED-GRPO reach on AIME 2024?" -> "... new state-of-the-art performance in average
      accuracy on AIME 2024 [1]", while the evidence sentence gives 56.7).
    """
    claims = [s for s in sentences if s.claim]
    if not sentences:
        return None
    if not any(s.claim or s.citations and not says_no_answer(s.text) for s in sentences) \
            or says_no_answer(sentences[0].text):
        return SAID_NO
    if not claims:
        return RESTATED if asks_for_content(query) else None
    if not any(s.supported for s in claims):
        return NONE_SUPPORTED
    if english and asks_for_number(question) and not any(states_a_value(s.text, question) for s in claims
                                                          if s.supported):
        return NO_VALUE
    return None


class SupportChecker:
    """Checks answer sentences against the numbered papers' abstracts with one embedder, keeping
    the vectors of the sentences it has seen (bounded, under its own lock: the threads answering
    at once share it)."""

    def __init__(self, settings: AnswerSettings, embedder: Embedder) -> None:
        self.settings = settings
        self.embedder = embedder
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._vectors_lock = threading.Lock()

    def check(self, text: str, by_number: Mapping[int, Paper], given: str = "", judge: Judge | None = None
              ) -> list[tuple[AnswerSentence, str, list[Evidence]]]:
        """Each sentence of ``text`` scored against the numbered papers: (checked sentence, as written, its evidence).

        ``given`` is what the user asked (the question, a line break, the retrieval query). A sentence that adds no word
        to it (a restatement, "Yes.", "This is described in [1].") or says the abstracts do not hold
        something is no claim: kept, not checked, its bare markers named by title. A claim is scored
        on the words it adds (`support_scores`); a number it adds must be in the paper; a name it holds
        that another numbered paper holds and this one does not makes it a claim about that other paper
        (SEED-GRPO is not DRA-GRPO); a name no paper and no question holds is invented; a claim stating
        the property a what/which question asks for needs a paper that mentions it; a claim in
        another language is also scored by its names and numbers found in the paper (`anchors`). A
        claim keeps the citations the model wrote when one of them supports it; otherwise the
        best-supporting numbered paper replaces them (``answer.attribute``); else it is unsupported.
        With a ``judge`` (the model asked whether the paper states the claim: entailment, not
        overlap), a claim is supported only by a paper the judge confirms, and re-attributed only to one.
        """
        threshold = self.settings.support_threshold
        question = given.split("\n")[0]
        english = is_english(question)
        asked = asked_property(question) if english else set()  # the property a what/which question asks for
        titles = {n: paper.title for n, paper in by_number.items()}
        texts = {n: evidence_text(paper.title, paper.abstract).lower() for n, paper in by_number.items()}
        given_names = {form for a in anchors(given) for form in (a, held_form(a, texts.values()))}
        stated: dict[int, dict[str, set[str]]] = {}  # each paper's number roles, once a claim adds a number
        named: set[int] = set()  # papers whose title the answer already gave
        which = asks_for_papers(question)

        def titled(shown: str, cites: list[int]) -> str:
            """In an answer to "which paper(s)": each cited name followed by its title, once."""
            if not which:
                return shown
            named.update(n for n in cites if names_title(shown, titles[n]) or f"\u201c{titles[n]}\u201d" in shown)
            unnamed = {n: titles[n] for n in cites if n not in named}
            named.update(cites)
            return title_markers(shown, unnamed)

        out: list[tuple[AnswerSentence, str, list[Evidence]]] = []
        for sentence in answer_sentences(text):
            written = [n for n in dict.fromkeys(sentence_citations(sentence)) if n in by_number]
            claim = strip_citations(sentence).strip("\u201c\u201d\" ")
            added = new_words(claim, given)
            numbers = numbers_in(sentence) - numbers_in(given)
            if (not added and not numbers) or says_no_answer(claim):  # a number it adds is a claim ("3")
                shown = sentence if says_no_answer(claim) else titled(name_papers(sentence, titles), written)
                out.append((AnswerSentence(shown, written, True, 0.0, claim=False), sentence, []))
                continue
            names = {held_form(a, texts.values()) for a in anchors(claim) if not a.replace(".", "").isdigit()}
            acronyms = {t.lower() for t in re.findall(r"\b[A-Z]{2,5}s?\b", claim)}  # RL, NLP, LLMs: often spelled out
            invented = {a for a in names - given_names - acronyms if not any(holds(t, a) for t in texts.values())}
            # a name the user gave that no numbered paper holds (an acronym: nor spells out): no paper
            # here can state a claim about it ("BCWI addresses ... [WiSE-FT's paper]", BCWI's not retrieved)
            absent = {a for a in names & given_names if not any(mentions(t, a) for t in texts.values())
                      and not (a in acronyms and any(spells_out(t, a) for t in texts.values()))}
            claimed = claimed_roles(claim) if numbers else {}
            best: dict[int, tuple[float, str]] = {}
            for n, paper in by_number.items():
                if n in written or self.settings.attribute:
                    paper_sentences = sentences_of(paper.abstract) or [paper.title]
                    if names_paper(claim, paper.title):  # "It is called DenseNets Reloaded [1]."
                        paper_sentences = [paper.title, *paper_sentences]
                    scores = self.support_scores([claim], paper_sentences, added=[added or {""}])[0]
                    if names and not (english and is_english(claim)):
                        scores = np.maximum(scores, [len(names & anchors(ps)) / len(names) for ps in paper_sentences])
                    if numbers:  # a number the paper does not state, or states of something else
                        if n not in stated:
                            stated[n] = number_roles(texts[n])
                        scores = scores * numbers_held(numbers, claimed, stated[n])
                    # a name this paper lacks that another numbered paper holds, and no other cited one
                    # (a paper the model did not cite, a re-attribution target, must hold it itself: the
                    # model's [1] holding "EvoLM" does not let EvoLM's claim move to PLaMo-100B's [2])
                    cited_with = [w for w in written if w != n] if n in written else []
                    foreign = any(not holds(texts[n], a) and any(holds(texts[m], a) for m in texts if m != n)
                                  and not any(holds(texts[w], a) for w in cited_with) for a in names)
                    unmentioned = unmentioned_property(claim, asked, texts[n])
                    if foreign or invented or absent or unmentioned:
                        scores = scores * 0.0  # about another numbered paper, naming what none holds, or
                        # stating of it the property the question asks for, which it never mentions
                    i = int(np.argmax(scores))
                    best[n] = (float(scores[i]), paper_sentences[i])
            cites, attributed = written, False
            supporting = [n for n in written if best[n][0] >= threshold]
            correctable = bool(_TRAILING_MARKERS.fullmatch(sentence)) or not written
            if correctable:
                # markers only at the end can be corrected: the unsupported ones dropped when another
                # supports the sentence, all replaced by the best-supporting paper when none does
                if supporting and supporting != written:
                    cites, attributed = supporting, True
                elif not supporting and best:
                    top = max(best, key=lambda n: best[n][0])
                    if best[top][0] >= threshold:
                        cites, attributed = [top], True
            entailed: bool | None = None
            if judge is not None and any(best[n][0] >= threshold for n in cites):
                confirmed = [n for n in cites if best[n][0] >= threshold and judge(claim, n, best[n][1])]
                if not confirmed and correctable and self.settings.attribute:
                    others = sorted((m for m in best if m not in cites and best[m][0] >= threshold),
                                    key=lambda m: -best[m][0])[:1]
                    confirmed = [m for m in others if judge(claim, m, best[m][1])]
                if confirmed and confirmed != cites and correctable:
                    cites, attributed = confirmed, True
                entailed = bool(confirmed)
            score = max((best[n][0] for n in cites), default=0.0)
            supported = score >= threshold and entailed is not False
            shown = with_citations(sentence, cites) if attributed else sentence
            shown = titled(shown, [n for n in cites if best[n][0] >= threshold])  # never a wrong title
            evidence = [Evidence(n, by_number[n].id, best[n][1], round(best[n][0], 4), shown) for n in cites]
            out.append((AnswerSentence(shown, cites, supported, round(score, 4), attributed=attributed,
                                       entailed=entailed, specifics=sorted(specifics(sentence, given) | absent)),
                        sentence, evidence))
        return out

    # ---------------------------------------------------------- scoring

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._vectors_lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
            if missing:
                for text, vector in zip(missing, self.embedder.encode(missing)):
                    self._vectors[text] = vector
            while len(self._vectors) > 20_000:
                self._vectors.popitem(last=False)
            return np.stack([self._vectors[t] for t in texts])

    def support_scores(self, claims: list[str], sentences: list[str],
                       added: Sequence[set[str]] | None = None) -> np.ndarray:
        """claims x sentences: 0.6 * cosine + 0.4 * share of the claim's content words in the sentence
        (with ``added``, one set of stemmed words per claim: the share of those, stemmed, instead).

        Quoting a sentence scores 1.0; a paraphrase scores on its cosine; an unrelated
        sentence scores near 0.
        """
        cos = self._encode(claims) @ self._encode(sentences).T
        overlap = np.zeros_like(cos)
        sentence_words = [content_words(s) for s in sentences]
        if added is not None:
            sentence_words = [stems(w) for w in sentence_words]
        for i, claim in enumerate(claims):
            words = added[i] if added is not None else content_words(claim)
            if words:
                overlap[i] = [len(words & sw) / len(words) for sw in sentence_words]
        return 0.6 * np.clip(cos, 0, 1) + 0.4 * overlap
