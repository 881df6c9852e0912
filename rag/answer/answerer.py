"""Question -> cited answer: abstention, prompting, streaming, citation and evidence checks.

The steps, in order:

1. retrieve papers (`rag.search.retrieval`), then decide *before* any LLM call whether to
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
5. check every answer sentence against the abstracts of the numbered papers (`rag.answer.support`): one
   its cited papers do not support is re-attributed to the paper that does, or marked
   unsupported. The source list puts cited papers first, the rest as "also retrieved".

Left out: choosing and talking to LLM servers (`rag.backends`), conversations (`rag.chat`), how a
sentence is checked (`rag.answer.support`), the result objects (`rag.answer.answer_result`), the question and the
model's reply cleaned up (`rag.answer.answer_text`: leaks, citation markers, loops), the prompt's parts
(`rag.answer.answer_prompt`), the answers made of quoted sentences (`rag.answer.answer_quotes`: abstentions with
context, lists, comparison lines, the extractive answer).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from rag.answer import comparison, evidence, language, listing, prompts
from rag.answer.answer_prompt import AnswerPrompt
from rag.answer.answer_quotes import Quotes
from rag.answer.answer_result import Answer, Citation, Event
from rag.answer.answer_text import (
    clean_question,
    given,
    one_line_reply,
    parse_citations,
    repeats_itself,
    scrub,
    stage_reading,
)
from rag.answer.question_kinds import asks_for_number, lists_papers, uncounted
from rag.answer.streaming import StreamGate
from rag.answer.support import NONE_SUPPORTED, AnswerSentence, Evidence, Judge, SupportChecker, unanswered
from rag.errors import BackendError
from rag.index.embeddings import Embedder
from rag.index.injection import answer_repeats, instruction_sentences
from rag.llm import Backend, Message, StreamInterrupted, generates
from rag.search.filters import Filters
from rag.search.ranking import query_names, telling_names
from rag.search.retrieval import MAX_QUERY_CHARS, PaperHit, Retriever, SearchResult, low_confidence
from rag.settings import Settings

WIDENED = "read the whole abstracts: their best sentences did not state the answer"  # a note
VERDICT_NO = "the model found that no retrieved abstract states the answer"  # the abstention reason of a "no"
STAGE_SEARCH, STAGE_WRITE, STAGE_CHECK = "searching the papers", "writing the answer", "checking the answer"
MAX_QUESTION_CHARS = MAX_QUERY_CHARS  # one limit for what is searched and what is answered


def number_papers(ids: Sequence[str], numbers: Mapping[str, int] | None) -> list[int]:
    """One citation number per paper id: papers numbered earlier in the conversation (``numbers``) keep
    theirs, the others take the smallest free ones, in order (answers and chat tables alike).

    >>> number_papers(["a", "b", "c"], {"b": 1, "z": 3})
    [2, 1, 4]
    """
    taken = set((numbers or {}).values())
    out = []
    for pid in ids:
        number = (numbers or {}).get(pid)
        if number is None:
            number = next(n for n in range(1, len(taken) + 2) if n not in taken)
            taken.add(number)
        out.append(number)
    return out


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
        self.prompt = AnswerPrompt(settings.answer, self.support)
        self.quotes = Quotes(settings.answer, self.support)

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
        event carries only text that passed the stream check (`rag.answer.streaming`): a sentence stating a
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
                self.quotes.listed(answer, numbered)
                answer.timings["ttft_s"] = time.perf_counter() - started
                yield Event("token", answer.answer)
            elif not abstain and generates(llm):
                delimiter = f"SOURCE-{secrets.token_hex(4)}"
                # evidence for what was asked: the question itself too (a condensed query may lose its point)
                sources = self.prompt.sources(query if lang != language.ENGLISH else f"{question} {query}", prompted,
                                              llm, question, history, wants_list)
                prompted = [(n, hit) for n, hit, _ in sources]
                if wants_list:
                    answer.notes.append(f"read {len(prompted)} of the papers the search found for this list")

                def build(sources: list[tuple[int, PaperHit, str]]) -> tuple[tuple[list[Message], str],
                                                                               list[Message]]:
                    """(the prompt parts over ``sources``, the answer's messages), their tokens counted."""
                    base = self.prompt.parts(question, sources, history, delimiter)
                    asked = self.prompt.messages_for(base, self.prompt.instruction(wants_list, lang))
                    answer.timings["prompt_tokens"] = float(sum(llm.count_tokens(m.content) for m in asked))
                    return base, asked

                def verdict(base: tuple[list[Message], str]) -> str | None:
                    return llm.choose(self.prompt.messages_for(base, prompts.CHECK_INSTRUCTION), ["yes", "no"])

                base, asked = build(sources)
                if cfg.answer.verify != "off" and llm.capable:
                    answer.verdict = verdict(base)
                    if answer.verdict == "no" and (wider := self.prompt.widened(sources, llm, question, history,
                                                                          wants_list)):
                        # the excerpts may have missed the sentence that answers: read the whole abstracts
                        base, asked = build(wider)
                        answer.verdict = verdict(base)
                        answer.notes.append(WIDENED)
                    answer.timings["verify_s"] = time.perf_counter() - t_retrieved
                    if answer.verdict == "no" and cfg.answer.verify == "abstain":
                        abstain, reason, near = True, VERDICT_NO, True
                if not abstain:
                    yield Event("stage", STAGE_WRITE)
                    temp = cfg.llm.temperature if temperature is None else temperature
                    cite = [n for n, _ in prompted] if cfg.answer.constrained else []
                    gate = StreamGate(given(question, query, lang),
                                      [evidence.evidence_text(h.paper.title, h.paper.abstract) for _, h in prompted],
                                      wants_value=lang == language.ENGLISH and asks_for_number(question))
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
                text = self.quotes.extractive(question if lang == language.ENGLISH else query, prompted)
                answer.timings["ttft_s"] = time.perf_counter() - started
                yield Event("token", text)
        except BackendError as err:
            text = err.partial if isinstance(err, StreamInterrupted) and err.partial else text
            answer.incomplete, answer.error = True, err.user_message()
        far = abstain and not near  # nothing retrieved is on the question's subject
        if abstain:
            self.quotes.abstain(answer, reason, numbered, prompted if near else [])
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
            self.quotes.cover(answer, question if lang == language.ENGLISH else query, prompted, numbered)
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

    def judge(self, llm: Backend, base: tuple[list[Message], str], answer: Answer) -> Judge:
        """The entailment check: the model, with the answer's prompt prefix (its KV cache), says whether
        an abstract states a claim. Calls are counted in the answer's timings."""
        def entails(claim: str, number: int, evidence: str) -> bool:
            t = time.perf_counter()
            instruction = prompts.VERIFY_INSTRUCTION.format(claim=claim, number=number, evidence=evidence)
            try:
                verdict = llm.choose(self.prompt.messages_for(base, instruction), ["yes", "no"])
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
        """Abstain when retrieval found nothing close enough (calibrated thresholds), unless the
        query names its subject: a name (`rag.search.ranking.query_names`) that the top paper and
        at most one other hold verbatim ("And what does ProLoRA do?" is short and matches no
        passage well, and ProLoRA's paper is the one it asks about)."""
        if not result.hits:
            return True, result.empty_because or "no paper matched"
        c, cfg = result.confidence, self.settings.answer
        if low_confidence(c.dense_top, c.coverage, cfg.abstain_threshold, cfg.abstain_coverage) \
                and not self.names_top_paper(result):
            return True, (f"best passage similarity {c.dense_top:.2f} < {cfg.abstain_threshold:.2f} and the top "
                          f"paper holds {c.coverage:.0%} of the question's terms (< {cfg.abstain_coverage:.0%})")
        return False, None

    @staticmethod
    def names_top_paper(result: SearchResult) -> bool:
        """The query gives a name that the top paper and at most one other hit hold verbatim."""
        names = query_names(result.query)
        return bool(names) and any(result.hits[0].paper.id in ids for ids in
                                   telling_names(names, [h.paper for h in result.hits]).values())

    @staticmethod
    def counts_unmentioned(query: str, prompted: list[tuple[int, PaperHit]]) -> str | None:
        """Why to abstain before any generation when a "how many X" query's prompted abstracts never
        mention X (`rag.answer.question_kinds.uncounted`); None otherwise."""
        counted = uncounted(query, (f"{hit.paper.title} {hit.paper.abstract}" for _, hit in prompted))
        return f"the question counts {counted}, which no retrieved abstract mentions" if counted else None

    def in_prompt(self, numbered: list[tuple[int, PaperHit]]) -> list[tuple[int, PaperHit]]:
        """The numbered papers that go into the prompt: those scoring at least
        ``answer.context_min_score`` of the best one (a distant fifth paper only invites a citation)."""
        top = max((hit.score for _, hit in numbered), default=0.0)
        return [(n, hit) for n, hit in numbered if hit.score >= self.settings.answer.context_min_score * top]

    @staticmethod
    def _number(hits: list[PaperHit], numbers: dict[str, int] | None) -> list[tuple[int, PaperHit]]:
        """`number_papers` for ``hits``, paired with them."""
        return list(zip(number_papers([hit.paper.id for hit in hits], numbers), hits, strict=True))

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
        context = list(by_number.items())
        if not answer.incomplete and (reason := unanswered(sentences, answer.question, answer.query,
                                                           answer.language == language.ENGLISH)):
            self.quotes.abstain(answer, reason, numbered, context)
            if reason == NONE_SUPPORTED:  # what it claimed is kept for evaluation, never shown
                answer.withheld = [s.text for s in sentences if s.claim]
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
        self.quotes.also_retrieved(answer, numbered)
