"""Question -> cited answer: abstention, prompting, streaming, citation and evidence checks.

The steps, in order:

1. retrieve papers (`rag.retrieval`), then decide *before* any LLM call whether to
   abstain, from retrieval confidence (thresholds calibrated on the development set's
   unanswerable questions; a small model cannot be trusted to abstain);
2. number the papers one per paper (papers cited earlier in a conversation keep their number,
   the others take the smallest free ones), fence each source with a random delimiter and fit
   them into the backend's prompt budget without cutting sentences;
3. with a capable model, ask it first whether the abstracts state the answer (a one-word
   verdict sharing the answer's prompt prefix, so nearly free on llama.cpp) and abstain on "no"
   (``answer.verify``); then stream the answer, constrained where the backend can be
   (``answer.constrained``: every sentence ends in a valid citation), or compose an extractive
   one (no LLM);
4. remove anything that leaked from the prompt, parse the citations, drop numbers that match no
   source (counted), and treat an answer that only says the abstracts do not hold the answer as
   an abstention;
5. check every answer sentence against the abstracts of the numbered papers (`rag.support`): one
   its cited papers do not support is re-attributed to the paper that does, or marked
   unsupported. The source list puts cited papers first, the rest as "also retrieved".

Left out: choosing and talking to LLM servers (`rag.backends`), conversations (`rag.chat`), how a
sentence is checked (`rag.support`), the result objects (`rag.answer_result`), the question and the
model's reply cleaned up (`rag.answer_text`: leaks, citation markers, loops).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from rag import comparison, evidence, language, listing, prompts
from rag.answer_result import Answer, Citation, Event
from rag.answer_text import clean_question, given, one_line_reply, parse_citations, repeats_itself, scrub, stage_reading
from rag.chunking import chunk_index
from rag.claims import anchors, holds, says_no_answer
from rag.embeddings import Embedder
from rag.errors import BackendError
from rag.filters import Filters
from rag.injection import answer_repeats, instruction_sentences
from rag.llm import Backend, Message, StreamInterrupted, generates
from rag.question_kinds import asks_for_content, lists_papers, uncounted
from rag.retrieval import MAX_QUERY_CHARS, PaperHit, Retriever, SearchResult, low_confidence
from rag.settings import Settings
from rag.streaming import StreamGate
from rag.support import AnswerSentence, Evidence, Judge, SupportChecker

WIDENED = "read the whole abstracts: their best sentences did not state the answer"  # a note
VERDICT_NO = "the model found that no retrieved abstract states the answer"  # the abstention reason of a "no"
STAGE_SEARCH, STAGE_WRITE, STAGE_CHECK = "searching the papers", "writing the answer", "checking the answer"
MAX_QUESTION_CHARS = MAX_QUERY_CHARS  # one limit for what is searched and what is answered


# ------------------------------------------------------------------ the answerer


class Answerer:
    """Answers questions over one index. Keep one per process (models load once)."""

    def __init__(self, settings: Settings, retriever: Retriever | None = None, embedder: Embedder | None = None,
                 backend: Backend | None = None) -> None:
        self.settings = settings
        self.embedder = embedder or (retriever.embedder if retriever else Embedder(settings.embedding))
        self.retriever = retriever or Retriever(settings, embedder=self.embedder)
        self._backend = backend  # None: resolved lazily from the settings
        self._notes: list[str] = []
        self.support = SupportChecker(settings.answer, self.embedder)  # the sentence check, its vector cache

    # ---------------------------------------------------------- backends

    def backend_for(self, name: str | None = None) -> tuple[Backend, list[str]]:
        """(backend, notes). ``name`` overrides the configured one; the extractive backend
        (`rag.backends.extractive`) writes nothing and comes without notes."""
        name = name or self.settings.llm.backend
        if name == "extractive":
            from rag.llm import ExtractiveBackend

            return ExtractiveBackend(self.settings.llm), []
        if name == self.settings.llm.backend and self._backend is not None:
            return self._backend, self._notes
        from rag.llm import select_backend

        llm = self.settings.llm.model_copy(update={"backend": name})
        backend, notes = select_backend(llm)
        if not generates(backend) and name == "auto":
            notes = [*notes, "no LLM available: answering extractively (quoted abstract sentences)"]
        if name == self.settings.llm.backend:
            self._backend, self._notes = backend, notes
        return backend, notes

    # ---------------------------------------------------------- main entry points

    def ask(self, question: str, **kwargs: Any) -> Answer:
        answer = None
        for event in self.stream(question, **kwargs):
            if event.kind == "done":
                answer = event.answer
        assert answer is not None
        return answer

    def stream(self, question: str, *, query: str | None = None, k: int | None = None,
               filters: Filters | None = None, backend: str | None = None,
               history: Sequence[Message] = (), numbers: dict[str, int] | None = None,
               temperature: float | None = None, dense_weight: float | None = None,
               pinned: Sequence[str] = ()) -> Iterator[Event]:
        """Yield stage and token events as the answer is written, then one ``done`` event with the `Answer`.

        ``query`` is the retrieval query (a condensed follow-up); ``numbers`` maps the papers cited
        earlier in this conversation to their citation numbers (kept; this answer's cited papers
        are added in place); ``pinned`` papers (the subject of a follow-up) are retrieved whatever
        the search ranks and are the only ones prompted (the others only invite a wrong citation:
        "Which tasks was it evaluated on?" after RAdam was answered from another paper). A token
        event carries only text that passed the stream check (`rag.streaming`): a sentence stating a
        number or name that no prompted abstract holds is never shown.
        """
        started = time.perf_counter()
        question = clean_question(question)
        cfg = self.settings
        yield Event("stage", STAGE_SEARCH)
        llm, notes = self.backend_for(backend)
        lang = language.detect(question)
        query = clean_question(query) if query else self.retrieval_query(question, llm, lang)
        wants_list = lists_papers(question) or lists_papers(query)  # a translated query asks it in English
        query = listing.topic(query) if wants_list else query
        depth = k or (cfg.answer.list_papers if wants_list else cfg.answer.max_context_papers)
        result = self.retriever.search(query, k=depth, filters=filters, dense_weight=dense_weight)
        hits = self.pin(result.hits, pinned)
        t_retrieved = time.perf_counter()
        answer = Answer(question=question, query=query, backend=llm.name, model=llm.model, notes=list(notes),
                        language=lang,
                        confidence=result.confidence, retrieved=[h.as_dict() for h in hits])
        answer.notes += result.notices
        answer.timings["retrieval_s"] = t_retrieved - started
        numbered = self._number(hits, numbers)
        prompted = self.in_prompt(numbered)
        if pinned and not wants_list:  # a follow-up about its subject reads only the subject's papers
            prompted = [(n, hit) for n, hit in prompted if hit.paper.id in pinned] or prompted

        abstain, reason = self.should_abstain(result) if not pinned else (False, None)
        near = False  # an abstention on the subject of retrieved papers: quote what they do say
        if not abstain and (unmentioned := self.counts_unmentioned(query, prompted)):
            abstain, reason, near = True, unmentioned, True
        text, delimiter, judge = "", "", None
        from_search = wants_list and cfg.answer.lists == "search"
        if not abstain:
            yield Event("stage", stage_reading(len(prompted)))
        try:
            if not abstain and from_search:
                self._list(answer, numbered)
                answer.timings["ttft_s"] = time.perf_counter() - started
                yield Event("token", answer.answer)
            elif not abstain and generates(llm):
                delimiter = f"SOURCE-{secrets.token_hex(4)}"
                # evidence for what was asked: the question itself too (a condensed query may lose its point)
                sources = self.sources(query if lang != language.ENGLISH else f"{question} {query}", prompted, llm,
                                       question, history, wants_list)
                prompted = [(n, hit) for n, hit, _ in sources]
                if wants_list:
                    answer.notes.append(f"read {len(prompted)} of the papers the search found for this list")

                def prompt(sources: list[tuple[int, PaperHit, str]]) -> tuple[tuple[list[Message], str],
                                                                                list[Message]]:
                    """(the prompt parts over ``sources``, the answer's messages), their tokens counted."""
                    base = self.prompt_parts(question, sources, history, delimiter)
                    asked = self.messages_for(base, self.instruction(wants_list, lang))
                    answer.timings["prompt_tokens"] = float(sum(llm.count_tokens(m.content) for m in asked))
                    return base, asked

                base, asked = prompt(sources)
                if cfg.answer.verify != "off" and llm.capable:
                    answer.verdict = llm.choose(self.messages_for(base, prompts.CHECK_INSTRUCTION), ["yes", "no"])
                    if answer.verdict == "no" and (wider := self.widened(sources, llm, question, history,
                                                                          wants_list)):
                        # the excerpts may have missed the sentence that answers: read the whole abstracts
                        base, asked = prompt(wider)
                        answer.verdict = llm.choose(self.messages_for(base, prompts.CHECK_INSTRUCTION), ["yes", "no"])
                        answer.notes.append(WIDENED)
                    answer.timings["verify_s"] = time.perf_counter() - t_retrieved
                    if answer.verdict == "no" and cfg.answer.verify == "abstain":
                        abstain, reason, near = True, VERDICT_NO, True
                if not abstain:
                    yield Event("stage", STAGE_WRITE)
                    temp = cfg.llm.temperature if temperature is None else temperature
                    cite = [n for n, _ in prompted] if cfg.answer.constrained else []
                    gate = StreamGate(given(question, query, lang),
                                      [evidence.evidence_text(h.paper.title, h.paper.abstract) for _, h in prompted])
                    for delta in llm.stream(asked,
                                            max_tokens=cfg.llm.max_new_tokens, temperature=temp, cite=cite):
                        answer.timings.setdefault("first_token_s", time.perf_counter() - started)
                        text += delta
                        if shown := gate.feed(delta):
                            answer.timings.setdefault("ttft_s", time.perf_counter() - started)
                            yield Event("token", shown)
                        if repeats_itself(text):
                            answer.notes.append("generation stopped: the model was repeating itself")
                            break
                    if shown := gate.close():
                        answer.timings.setdefault("ttft_s", time.perf_counter() - started)
                        yield Event("token", shown)
                    answer.timings["generated_tokens"] = float(llm.count_tokens(text))
                    if cfg.answer.entailment == "model" and llm.capable:
                        judge = self.judge(llm, base, answer)
            elif not abstain:
                text = self._extractive(question if lang == language.ENGLISH else query, prompted)
                answer.timings["ttft_s"] = time.perf_counter() - started
                yield Event("token", text)
        except BackendError as err:
            text = err.partial if isinstance(err, StreamInterrupted) and err.partial else text
            answer.incomplete, answer.error = True, err.user_message()
        far = abstain and not near  # nothing retrieved is on the question's subject
        if abstain:
            self._abstain(answer, reason, numbered, prompted if near else [])
            answer.timings.setdefault("ttft_s", time.perf_counter() - started)
            yield Event("token", answer.answer)
        elif not from_search:
            answer.timings.setdefault("ttft_s", time.perf_counter() - started)
            yield Event("stage", STAGE_CHECK)
            t_check = time.perf_counter()
            self._finish(answer, text, numbered, delimiter, prompted, judge)
            answer.timings["check_s"] = time.perf_counter() - t_check
        if not far and not answer.incomplete and len(pinned) <= comparison.COMPARED \
                and (comparison.compares(question) or comparison.compares(query)):  # (a table's overview pins its rows)
            self._cover(answer, question if lang == language.ENGLISH else query, prompted, numbered)
        if numbers is not None:
            numbers.update({c.paper.id: c.number for c in answer.citations})
        answer.timings["total_s"] = time.perf_counter() - started
        yield Event("done", answer=answer)

    # ---------------------------------------------------------- steps

    @staticmethod
    def retrieval_query(question: str, llm: Backend, lang: str = language.ENGLISH) -> str:
        """The question, or its English translation by a capable model when it is in another language
        (the embedder and BM25 are English); the answer is still written in the question's language."""
        if not llm.capable or lang == language.ENGLISH:
            return question
        try:
            reply = "".join(llm.stream(prompts.side_task(prompts.TRANSLATE_PROMPT.format(question=question)),
                                       max_tokens=80, temperature=0.0))
        except BackendError:
            return question
        return one_line_reply(reply) or question

    @staticmethod
    def instruction(listing: bool, lang: str) -> str:
        """The answer's final instruction: a list for "which papers", in the question's language."""
        text = prompts.LIST_INSTRUCTION if listing else prompts.ANSWER_INSTRUCTION
        return text + (prompts.LANGUAGE_INSTRUCTION.format(language=language.name(lang))
                       if lang != language.ENGLISH else "")

    def judge(self, llm: Backend, base: tuple[list[Message], str], answer: Answer) -> Judge:
        """The entailment check: the model, with the answer's prompt prefix (its KV cache), says whether
        an abstract states a claim. Calls are counted in the answer's timings."""
        def entails(claim: str, number: int, evidence: str) -> bool:
            t = time.perf_counter()
            instruction = prompts.VERIFY_INSTRUCTION.format(claim=claim, number=number, evidence=evidence)
            try:
                verdict = llm.choose(self.messages_for(base, instruction), ["yes", "no"])
            except BackendError:
                verdict = None  # the check could not run: the claim is not confirmed
            answer.timings["entail_s"] = answer.timings.get("entail_s", 0.0) + time.perf_counter() - t
            answer.timings["entail_calls"] = answer.timings.get("entail_calls", 0.0) + 1
            return verdict == "yes"

        return entails

    def pin(self, hits: list[PaperHit], pinned: Sequence[str]) -> list[PaperHit]:
        """``hits`` with the ``pinned`` papers first, scored as the best hit (read from the index when
        the search did not return them; an id the index no longer holds is skipped)."""
        if not pinned:
            return hits
        top = max((h.score for h in hits), default=1.0)
        found = {h.paper.id: h for h in hits}
        papers = self.retriever.index().papers
        front = []
        for pid in dict.fromkeys(pinned):
            if (hit := found.pop(pid, None)) is not None:
                front.append(replace(hit, score=max(hit.score, top)))
            elif (paper := papers.get(pid)) is not None:
                front.append(PaperHit(paper, top, None, None, None, None))
        return front + [h for h in hits if h.paper.id in found]

    def should_abstain(self, result: SearchResult) -> tuple[bool, str | None]:
        """Abstain when retrieval found nothing close enough (calibrated thresholds)."""
        if not result.hits:
            return True, result.empty_because or "no paper matched"
        c, cfg = result.confidence, self.settings.answer
        if low_confidence(c.dense_top, c.coverage, cfg.abstain_threshold, cfg.abstain_coverage):
            return True, (f"best passage similarity {c.dense_top:.2f} < {cfg.abstain_threshold:.2f} and the top "
                          f"paper holds {c.coverage:.0%} of the question's terms (< {cfg.abstain_coverage:.0%})")
        return False, None

    @staticmethod
    def counts_unmentioned(query: str, prompted: list[tuple[int, PaperHit]]) -> str | None:
        """Why to abstain before any generation when a "how many X" query's prompted abstracts never
        mention X (`rag.question_kinds.uncounted`); None otherwise."""
        counted = uncounted(query, (f"{hit.paper.title} {hit.paper.abstract}" for _, hit in prompted))
        return f"the question counts {counted}, which no retrieved abstract mentions" if counted else None

    def in_prompt(self, numbered: list[tuple[int, PaperHit]]) -> list[tuple[int, PaperHit]]:
        """The numbered papers that go into the prompt: those scoring at least
        ``answer.context_min_score`` of the best one (a distant fifth paper only invites a citation)."""
        top = max((hit.score for _, hit in numbered), default=0.0)
        return [(n, hit) for n, hit in numbered if hit.score >= self.settings.answer.context_min_score * top]

    def _abstain(self, answer: Answer, reason: str | None, numbered: list[tuple[int, PaperHit]],
                 context: Sequence[tuple[int, PaperHit]] = ()) -> None:
        """Make ``answer`` the abstention, in the question's language. With ``context`` (the papers on
        the question's subject) it goes on to quote the abstract sentence closest to the question: what
        the papers do say, checked by construction, cited, with its evidence."""
        answer.abstained, answer.abstain_reason = True, reason
        answer.answer, answer.sentences, answer.citations = language.abstain_phrase(answer.language), [], []
        quoted = self._closest_sentence(answer.query, context) if context else None
        if quoted is not None:
            number, hit, sentence = quoted
            said = f"{language.context_lead(answer.language)} \u201c{sentence}\u201d [{number}]"
            answer.answer = f"{answer.answer} {said}"
            self._quote(answer, number, hit, sentence, said, claim=False)
        self._also_retrieved(answer, numbered)

    def _list(self, answer: Answer, numbered: list[tuple[int, PaperHit]]) -> None:
        """Make ``answer`` the list of papers the search ranks close to the best whose title or one
        sentence is about the list's topic (`rag.listing`), each line quoting its abstract's sentence
        nearest the topic: checked by construction."""
        cfg = self.settings.answer
        lines = []
        for number, hit in listing.listed([((n, hit), hit.score) for n, hit in numbered],
                                          cfg.list_min_score, cfg.list_papers):
            sentences = evidence.sentences_of(hit.paper.abstract) or [hit.paper.title]
            scores = self.support.support_scores([answer.query], [hit.paper.title, *sentences])[0]
            if scores.max() >= cfg.list_min_support:
                sentence = sentences[int(np.argmax(scores[1:]))]
                lines.append(listing.line(number, hit.paper.title, sentence))
                self._quote(answer, number, hit, sentence, lines[-1])
        answer.answer = "\n".join([listing.lead(len(lines), answer.language), *lines])
        self._also_retrieved(answer, numbered)

    def _cover(self, answer: Answer, query: str, prompted: list[tuple[int, PaperHit]],
               numbered: list[tuple[int, PaperHit]]) -> None:
        """A comparison's answer cites each compared paper (the first two it read): one the answer
        left out gets a line quoting its abstract's sentence nearest the query (`rag.comparison`)."""
        cited = {c.number for c in answer.citations}
        top = max((hit.score for _, hit in prompted), default=0.0)
        for number, hit in prompted[:comparison.COMPARED]:
            if number in cited or hit.score < comparison.MIN_SHARE * top:
                continue
            if ranked := self.ranked_sentences(query, [(number, hit)], top_papers=1):
                said = comparison.line(number, hit.paper.title, ranked[0][1])
                answer.answer = f"{answer.answer}\n{said}"
                self._quote(answer, number, hit, ranked[0][1], said)
        self._also_retrieved(answer, numbered)

    @staticmethod
    def _quote(answer: Answer, number: int, hit: PaperHit, sentence: str, said: str, claim: bool = True) -> None:
        """Add ``said``, which quotes ``sentence`` of paper [number], to the answer's sentences and
        citations: a claim its quote supports (an abstention's: ``claim=False``, it says what is not there)."""
        answer.sentences.append(AnswerSentence(said, [number], True, 1.0, claim=claim))
        answer.citations.append(Citation(number, hit.paper, True, hit.score,
                                         [Evidence(number, hit.paper.id, sentence, 1.0, said)]))

    @staticmethod
    def _also_retrieved(answer: Answer, numbered: list[tuple[int, PaperHit]]) -> None:
        cited = {c.number for c in answer.citations}
        answer.also_retrieved = [Citation(n, h.paper, False, h.score) for n, h in numbered if n not in cited]

    def _closest_sentence(self, query: str, papers: Sequence[tuple[int, PaperHit]]
                          ) -> tuple[int, PaperHit, str] | None:
        """The abstract sentence that best matches the query (`ranked_sentences`), from the papers that
        hold a name the query gives ("USI"): what is said about the subject. None when no paper holds
        one ("What is the capital of France?" has no subject among the papers)."""
        names = anchors(query)
        named = [(n, hit) for n, hit in papers
                 if any(holds(f"{hit.paper.title} {hit.paper.abstract}".lower(), a) for a in names)]
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

    @staticmethod
    def _number(hits: list[PaperHit], numbers: dict[str, int] | None) -> list[tuple[int, PaperHit]]:
        """One number per paper: papers cited earlier keep theirs, the others take the smallest free ones.

        >>> from types import SimpleNamespace as NS
        >>> hits = [NS(paper=NS(id=i)) for i in "abc"]
        >>> [n for n, _ in Answerer._number(hits, {"b": 1, "z": 3})]
        [2, 1, 4]
        """
        taken = set((numbers or {}).values())
        out = []
        for hit in hits:
            number = (numbers or {}).get(hit.paper.id)
            if number is None:
                number = next(n for n in range(1, len(taken) + 2) if n not in taken)
                taken.add(number)
            out.append((number, hit))
        return out

    def sources(self, query: str, prompted: list[tuple[int, PaperHit]], llm: Backend, question: str,
                history: Sequence[Message] = (), listing: bool = False,
                whole: bool = False) -> list[tuple[int, PaperHit, str]]:
        """The text each prompted paper brings, best papers first, within the backend's prompt budget:
        with ``answer.evidence`` ``sentences`` (the default) the sentences that best match the query
        (`rag.evidence`, ``answer.evidence_tokens``; a list question's papers share
        ``answer.list_evidence_tokens``), with ``abstracts`` (or ``whole``) each whole abstract (its best
        chunks when long), cut at a sentence end. A paper that gets no text stays out of the prompt."""
        cfg = self.settings.answer
        longest = max(prompts.ANSWER_INSTRUCTION, prompts.LIST_INSTRUCTION, prompts.CHECK_INSTRUCTION, key=len)
        budget = llm.prompt_budget - llm.count_tokens(prompts.SYSTEM_PROMPT) - llm.count_tokens(question) \
            - llm.count_tokens(longest) - 60 - sum(llm.count_tokens(m.content) for m in history)
        header = {n: llm.count_tokens(self._block(n, hit, "SOURCE-0000abcd", "")) for n, hit in prompted}
        if cfg.evidence == "sentences" and not whole:
            room = min(budget, cfg.list_evidence_tokens if listing else cfg.evidence_tokens)
            texts = evidence.select(query, [hit.paper.abstract for _, hit in prompted],
                                    lambda q, sentences: self.support.support_scores([q], sentences)[0],
                                    llm.count_tokens, room, [header[n] for n, _ in prompted])
            return [(n, hit, text) for (n, hit), text in zip(prompted, texts) if text]
        out = []
        for number, hit in prompted:
            sentences = evidence.sentences_of(self._source_text(hit))
            while sentences and (cost := header[number] + llm.count_tokens(" ".join(sentences))) > budget:
                sentences.pop()  # drop whole sentences from the end, never cut one
            if not sentences:
                break
            out.append((number, hit, " ".join(sentences)))
            budget -= cost
        return out

    def widened(self, sources: list[tuple[int, PaperHit, str]], llm: Backend, question: str,
                history: Sequence[Message], listing: bool) -> list[tuple[int, PaperHit, str]] | None:
        """The whole abstracts of the papers ``sources`` excerpted, when ``answer.widen`` is on and they
        say more than the excerpts; None otherwise (nothing new to read before abstaining). A
        paraphrased or translated question often scores the sentence that answers it below others,
        so an excerpt can lack it while the abstract has it (dev: 5 of 81 answerable questions)."""
        if not self.settings.answer.widen or self.settings.answer.evidence != "sentences":
            return None
        wider = self.sources(question, [(n, hit) for n, hit, _ in sources], llm, question, history, listing,
                             whole=True)
        return wider if [t for *_, t in wider] != [t for *_, t in sources] else None

    @staticmethod
    def _block(number: int, hit: PaperHit, delimiter: str, text: str) -> str:
        return prompts.SOURCE_TEMPLATE.format(number=number, title=hit.paper.title, delimiter=delimiter, text=text,
                                              year=f" ({hit.paper.year})" if hit.paper.year else "")

    def prompt_parts(self, question: str, sources: list[tuple[int, PaperHit, str]], history: Sequence[Message] = (),
                     delimiter: str = "SOURCE") -> tuple[list[Message], str]:
        """(system + bounded history, the user message without its final instruction): the sources
        (`sources`) fenced with ``delimiter``, then the question."""
        blocks = [self._block(n, hit, delimiter, text) for n, hit, text in sources]
        # the instruction goes last, appended by `messages_for` (never substituted into text that
        # holds abstracts, which may contain anything, "{instruction}" included)
        user = prompts.USER_TEMPLATE.format(sources="\n\n".join(blocks), question=question, delimiter=delimiter,
                                            instruction="")
        return [Message("system", prompts.SYSTEM_PROMPT), *history], user

    @staticmethod
    def messages_for(parts: tuple[list[Message], str], instruction: str) -> list[Message]:
        """The prompt parts with their final instruction: the check's or the answer's."""
        head, user = parts
        return [*head, Message("user", user + instruction)]

    def _source_text(self, hit: PaperHit) -> str:
        """The paper's best chunks in abstract order (the whole abstract when it is short)."""
        if len(hit.paper.abstract) < 1200 or not hit.chunks:
            return hit.paper.abstract
        order = sorted(hit.chunks, key=lambda c: chunk_index(c.chunk_id))
        return " ".join(c.text for c in order)

    def _extractive(self, question: str, numbered: list[tuple[int, PaperHit]], max_sentences: int = 3) -> str:
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

    def _finish(self, answer: Answer, text: str, numbered: list[tuple[int, PaperHit]], delimiter: str = "",
                prompted: list[tuple[int, PaperHit]] | None = None, judge: Judge | None = None) -> None:
        """Scrub, parse and check the model's text into ``answer``: the ``prompted`` papers (all
        numbered ones when None) were in the prompt and can be cited, the rest are only listed.

        A claim no abstract supports that states a number or a name is left out of the answer
        (``Answer.withheld``), never shown flagged; an answer whose claims are all unsupported, or
        that says first that the abstracts do not hold the answer, is an abstention that quotes what
        the abstracts do say about the subject."""
        by_number = dict(numbered if prompted is None else prompted)
        answer.generated = text
        text, answer.removed = scrub(text, delimiter)
        clean, _, invalid = parse_citations(text, list(by_number))
        answer.invalid_citations = invalid
        papers = {n: hit.paper for n, hit in by_number.items()}
        checked = self.support.check(clean, papers, given=given(answer.question, answer.query, answer.language),
                                     judge=judge)
        sentences = [s for s, _, _ in checked]
        claims = [s for s in sentences if s.claim]
        context = list(by_number.items())
        if not answer.incomplete and sentences and (
                not any(s.claim or s.citations and not says_no_answer(s.text) for s in sentences)
                or says_no_answer(sentences[0].text)):
            # only "not stated" sentences, or one first: the answer to what was asked is that it is not there
            self._abstain(answer, "the model said the papers do not answer it", numbered, context)
            return
        if not answer.incomplete and sentences and not claims and asks_for_content(answer.query):
            # "The peak learning rate turned out to be optimal for the 124M model [1]." adds nothing
            self._abstain(answer, "the answer only restated the question", numbered, context)
            return
        if not answer.incomplete and claims and not any(s.supported for s in claims):
            self._abstain(answer, "no retrieved abstract states what the answer claimed", numbered, context)
            answer.withheld = [s.text for s in claims]
            return
        injected = instruction_sentences(" ".join(hit.paper.abstract for hit in by_number.values()))
        kept: list[tuple[AnswerSentence, list[Evidence]]] = []
        for s, original, found in checked:
            if injected and answer_repeats(original, injected):  # an abstract's instruction, repeated
                s.supported = False
                answer.notes.append("left out a sentence that repeats an instruction found in an abstract")
                answer.withheld.append(s.text)
                clean = clean.replace(original, "", 1)
                continue
            if s.claim and not s.supported and s.specifics:  # an unsupported number or name is never shown
                answer.withheld.append(s.text)
                clean = clean.replace(original, "", 1)
                continue
            if s.text != original:  # re-attributed and named sentences replace what the model wrote
                clean = clean.replace(original, s.text, 1)
            kept.append((s, found))
        if answer.withheld:
            answer.notes.append(f"left out {len(answer.withheld)} sentence{'s' if len(answer.withheld) > 1 else ''} "
                                "stating a number or name that no retrieved abstract states")
        answer.answer = re.sub(r"[ \t]{2,}", " ", clean).strip()
        answer.sentences = [s for s, _ in kept]
        cited = list(dict.fromkeys(n for s in answer.sentences for n in s.citations))
        citations = {n: Citation(n, by_number[n].paper, True, by_number[n].score) for n in cited}
        for _, found in kept:
            for e in found:
                citations[e.number].evidence.append(e)
        answer.citations = [citations[n] for n in cited]
        self._also_retrieved(answer, numbered)
