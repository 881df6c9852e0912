"""Answers made of quoted abstract sentences, checked by construction: an abstention that quotes
what the papers do say about the subject, a "which papers" list from the search, a comparison line
for a compared paper the answer left out, the extractive answer (no model), and the source list's
"also retrieved" papers.

Left out: what the model writes and its check (`rag.answer.answerer`, `rag.answer.support`), the list's and the
comparison's wording (`rag.answer.listing`, `rag.answer.comparison`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rag.answer import comparison, evidence, language, listing, prompts
from rag.answer.answer_result import Answer, Citation
from rag.answer.claims import anchors, holds
from rag.answer.support import AnswerSentence, Evidence, SupportChecker
from rag.search.retrieval import PaperHit
from rag.settings import AnswerSettings


class Quotes:
    """Writes the quoted answers of one answerer (its settings, its sentence scorer)."""

    def __init__(self, settings: AnswerSettings, support: SupportChecker) -> None:
        self.settings, self.support = settings, support

    def abstain(self, answer: Answer, reason: str | None, numbered: list[tuple[int, PaperHit]],
                 context: Sequence[tuple[int, PaperHit]] = ()) -> None:
        """Make ``answer`` the abstention, in the question's language. With ``context`` (the papers on
        the question's subject) it goes on to quote the abstract sentence closest to the question: what
        the papers do say, checked by construction, cited, with its evidence."""
        answer.abstained, answer.abstain_reason = True, reason
        answer.answer, answer.sentences, answer.citations = language.abstain_phrase(answer.language), [], []
        quoted = self.closest_sentence(answer.query, context, answer.question) if context else None
        if quoted is not None:
            number, hit, sentence = quoted
            said = f"{language.context_lead(answer.language)} \u201c{sentence}\u201d [{number}]"
            answer.answer = f"{answer.answer} {said}"
            self.quote(answer, number, hit, sentence, said, claim=False)
        self.also_retrieved(answer, numbered)

    def listed(self, answer: Answer, numbered: list[tuple[int, PaperHit]]) -> None:
        """Make ``answer`` the list of papers the search ranks close to the best whose title or one
        sentence is about the list's topic (`rag.answer.listing`), each line quoting its abstract's sentence
        nearest the topic: checked by construction."""
        cfg = self.settings
        lines = []
        for number, hit in listing.listed([((n, hit), hit.score) for n, hit in numbered],
                                          cfg.list_min_score, cfg.list_papers):
            sentences = evidence.sentences_of(hit.paper.abstract) or [hit.paper.title]
            scores = self.support.support_scores([answer.query], [hit.paper.title, *sentences])[0]
            if scores.max() >= cfg.list_min_support:
                sentence = sentences[int(np.argmax(scores[1:]))]
                lines.append(listing.line(number, hit.paper.title, sentence))
                self.quote(answer, number, hit, sentence, lines[-1])
        answer.answer = "\n".join([listing.lead(len(lines), answer.language), *lines])
        self.also_retrieved(answer, numbered)

    def cover(self, answer: Answer, query: str, prompted: list[tuple[int, PaperHit]],
               numbered: list[tuple[int, PaperHit]]) -> None:
        """A comparison's answer cites each compared paper (the first two it read): one the answer
        left out gets a line quoting its abstract's sentence nearest the query (`rag.answer.comparison`)."""
        cited = {c.number for c in answer.citations}
        top = max((hit.score for _, hit in prompted), default=0.0)
        for number, hit in prompted[:comparison.COMPARED]:
            if number in cited or hit.score < comparison.MIN_SHARE * top:
                continue
            if ranked := self.ranked_sentences(query, [(number, hit)], top_papers=1):
                said = comparison.line(number, hit.paper.title, ranked[0][1])
                answer.answer = f"{answer.answer}\n{said}"
                self.quote(answer, number, hit, ranked[0][1], said)
        self.also_retrieved(answer, numbered)

    @staticmethod
    def quote(answer: Answer, number: int, hit: PaperHit, sentence: str, said: str, claim: bool = True) -> None:
        """Add ``said``, which quotes ``sentence`` of paper [number], to the answer's sentences and
        citations: a claim its quote supports (an abstention's: ``claim=False``, it says what is not there)."""
        answer.sentences.append(AnswerSentence(said, [number], True, 1.0, claim=claim))
        answer.citations.append(Citation(number, hit.paper, True, hit.score,
                                         [Evidence(number, hit.paper.id, sentence, 1.0, said)]))

    @staticmethod
    def also_retrieved(answer: Answer, numbered: list[tuple[int, PaperHit]]) -> None:
        cited = {c.number for c in answer.citations}
        answer.also_retrieved = [Citation(n, h.paper, False, h.score) for n, h in numbered if n not in cited]

    def closest_sentence(self, query: str, papers: Sequence[tuple[int, PaperHit]], question: str = ""
                          ) -> tuple[int, PaperHit, str] | None:
        """The abstract sentence that best matches the query (`ranked_sentences`), from the papers that
        hold a name the user's ``question`` gives ("USI"), else a name the query gives (a follow-up's
        query names the subject its question points at): what is said about the subject. None when
        no paper holds one ("What is the capital of France?" has no subject among the papers).

        The question's own names come first because a query may name what the question did not: a
        non-English question's query is the model's English rendering, which can name a paper of its
        own invention ("... was the Skywork-MoE model", asked about the SKILL-MIX study)."""
        def holding(names: set[str]) -> list[tuple[int, PaperHit]]:
            return [(n, hit) for n, hit in papers
                    if any(holds(f"{hit.paper.title} {hit.paper.abstract}".lower(), a) for a in names)]

        named = holding(anchors(question)) or holding(anchors(query))
        if not named:  # the question names nothing the papers hold: no subject to say anything about
            return None
        ranked = self.ranked_sentences(query, named)
        if not ranked:
            return None
        number, sentence, _ = ranked[0]
        return number, dict(papers)[number], sentence

    def ranked_sentences(self, query: str, papers: Sequence[tuple[int, PaperHit]], top_papers: int = 3
                         ) -> list[tuple[int, str, float]]:
        """(number, sentence) of the first ``top_papers`` papers' abstracts, best first: sentence-to-query
        support plus a prior for how well its paper matched (the retrieval score is fused over the
        whole paper: names and acronyms weigh in there)."""
        candidates = [(n, s) for n, hit in papers[:top_papers] for s in evidence.sentences_of(hit.paper.abstract)]
        if not candidates:
            return []
        prior = {n: hit.score for n, hit in papers}
        top = max(prior.values()) or 1.0
        scores = self.support.support_scores([query], [s for _, s in candidates])[0] + \
            np.array([0.25 * prior[n] / top for n, _ in candidates])
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])
        return [(*candidates[i], float(scores[i])) for i in order]


    def extractive(self, question: str, numbered: list[tuple[int, PaperHit]], max_sentences: int = 3) -> str:
        """The abstract sentences most similar to the question, quoted, each with its citation."""
        ranked = self.ranked_sentences(question, numbered)
        if not ranked:
            return prompts.ABSTAIN_PHRASE
        best = ranked[0][2]
        picked = [(n, s) for n, s, score in ranked[:max_sentences] if score >= best - 0.1]
        position = {c: i for i, c in enumerate((n, s) for n, hit in numbered
                                                for s in evidence.sentences_of(hit.paper.abstract))}
        picked.sort(key=lambda c: (c[0], position[c]))  # group by paper, abstract order
        return " ".join(f"\u201c{s.rstrip()}\u201d [{n}]" for n, s in picked)
