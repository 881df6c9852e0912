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

Left out: choosing and talking to LLM servers (`rag.llm`), conversations (`rag.chat`), how a
sentence is checked (`rag.support`).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag import prompts
from rag.chunking import chunk_index, split_sentences
from rag.corpus import Paper
from rag.embeddings import Embedder
from rag.errors import BackendError
from rag.llm import Backend, Message, StreamInterrupted
from rag.retrieval import (
    MAX_QUERY_CHARS,
    Confidence,
    Filters,
    PaperHit,
    Retriever,
    SearchResult,
    clean_query,
    low_confidence,
)
from rag.settings import Settings
from rag.support import CITATION_MARKER, AnswerSentence, Evidence, SupportChecker, is_english, says_no_answer, uncounted

VERDICT_NO = "the model found that no retrieved abstract states the answer"  # the abstention reason of a "no"
MAX_QUESTION_CHARS = MAX_QUERY_CHARS  # one limit for what is searched and what is answered
_PLACEHOLDER = re.compile(r"\[(?:n|N|x|X|\?|\.\.\.|number)\]")  # a template's marker copied literally


# ------------------------------------------------------------------ result objects


@dataclass
class Citation:
    number: int
    paper: Paper
    cited: bool
    score: float                                    # retrieval score
    evidence: list[Evidence] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "paper_id": self.paper.id, "title": self.paper.title,
                "year": self.paper.year, "authors": self.paper.authors, "links": self.paper.links,
                "abstract": self.paper.abstract, "cited": self.cited, "score": round(self.score, 6),
                "evidence": [e.as_dict() for e in self.evidence]}


@dataclass
class Answer:
    question: str
    query: str
    answer: str = ""
    abstained: bool = False
    abstain_reason: str | None = None
    incomplete: bool = False
    error: str | None = None
    backend: str = ""
    model: str = ""
    notes: list[str] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)      # cited papers, in order of first citation
    also_retrieved: list[Citation] = field(default_factory=list)  # retrieved, not cited
    sentences: list[AnswerSentence] = field(default_factory=list)
    invalid_citations: int = 0
    removed: list[str] = field(default_factory=list)  # text that leaked from the prompt, taken out
    generated: str = ""  # what the model wrote, before any check (`rag eval rescore` replays it)
    verdict: str | None = None  # the model's answer to "do the abstracts state the answer?"
    confidence: Confidence | None = None
    retrieved: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def unsupported(self) -> list[AnswerSentence]:
        return [s for s in self.sentences if not s.supported]

    def as_dict(self) -> dict[str, Any]:
        return {
            "question": self.question, "query": self.query, "answer": self.answer,
            "abstained": self.abstained, "abstain_reason": self.abstain_reason,
            "incomplete": self.incomplete, "error": self.error, "backend": self.backend, "model": self.model,
            "notes": self.notes, "citations": [c.as_dict() for c in self.citations],
            "also_retrieved": [c.as_dict() for c in self.also_retrieved],
            "sentences": [s.as_dict() for s in self.sentences], "invalid_citations": self.invalid_citations,
            "removed": self.removed, "generated": self.generated, "verdict": self.verdict,
            "confidence": self.confidence.as_dict() if self.confidence else None,
            "retrieved": self.retrieved, "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


@dataclass
class Event:
    """What `Answerer.stream` yields: text deltas as they come, then the finished answer."""

    kind: str                      # "token" | "done"
    text: str = ""
    answer: Answer | None = None


# ------------------------------------------------------------------ pure helpers


def clean_question(question: str) -> str:
    """`rag.retrieval.clean_query`'s rules for a question: empty or too long is an `InputError`."""
    return clean_query(question, "question")[0]


def parse_citations(text: str, valid: Sequence[int]) -> tuple[str, list[int], int]:
    """Citation markers -> (text without invalid markers, valid numbers in order, invalid count).

    >>> parse_citations("A [1]. B [2, 7]. C [1-2]. D [n].", [1, 2])
    ('A [1]. B [2]. C [1][2]. D.', [1, 2], 2)
    """
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


def flagged_segments(answer: Answer) -> list[tuple[str, str | None]]:
    """The answer text cut into (segment, flag) pieces, flag ``unsupported`` (its cited abstracts do
    not support it), ``uncited`` (a claim citing nothing) or ``None``, keeping the text between them."""
    out: list[tuple[str, str | None]] = []
    text, at = answer.answer, 0
    if answer.abstained:
        return [(text, None)]
    for s in answer.sentences:
        i = text.find(s.text, at)
        if i < 0:
            continue
        if i > at:
            out.append((text[at:i], None))
        flag = None if s.supported or not s.claim else ("unsupported" if s.citations else "uncited")
        out.append((s.text, flag))
        at = i + len(s.text)
    if at < len(text):
        out.append((text[at:], None))
    return out


def marked_answer(answer: Answer, style: str = "plain") -> str:
    """The answer with each flagged sentence followed by a mark: ``plain`` ``[unsupported]``,
    ``markdown`` `` ⚠ *unsupported*``."""
    mark = "[{flag}]" if style == "plain" else "\u26a0 *{flag}*"
    return "".join(seg if flag is None else f"{seg} {mark.format(flag=flag)}" for seg, flag in flagged_segments(answer))


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


# ------------------------------------------------------------------ the answerer


class Answerer:
    """Answers questions over one index. Keep one per process (models load once)."""

    def __init__(self, settings: Settings, retriever: Retriever | None = None, embedder: Embedder | None = None,
                 backend: Backend | None = None) -> None:
        self.settings = settings
        self.embedder = embedder or (retriever.embedder if retriever else Embedder(settings.embedding))
        self.retriever = retriever or Retriever(settings, embedder=self.embedder)
        self._backend = backend  # None: resolved lazily from the settings
        self._backend_resolved = backend is not None
        self._notes: list[str] = []
        self.support = SupportChecker(settings.answer, self.embedder)  # the sentence check, its vector cache

    # ---------------------------------------------------------- backends

    def backend_for(self, name: str | None = None) -> tuple[Backend | None, list[str]]:
        """(backend or None for extractive, notes). ``name`` overrides the configured one."""
        name = name or self.settings.llm.backend
        if name == "extractive":
            return None, []
        if name == self.settings.llm.backend and self._backend_resolved:
            return self._backend, self._notes
        from rag.llm import select_backend

        llm = self.settings.llm.model_copy(update={"backend": name})
        backend, notes = select_backend(llm)
        if backend is None and name == "auto":
            notes = [*notes, "no LLM available: answering extractively (quoted abstract sentences)"]
        if name == self.settings.llm.backend:
            self._backend, self._notes, self._backend_resolved = backend, notes, True
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
               temperature: float | None = None, dense_weight: float | None = None) -> Iterator[Event]:
        """Yield token events as the answer is written, then one ``done`` event with the `Answer`.

        ``query`` is the retrieval query (a condensed follow-up); ``numbers`` maps the papers cited
        earlier in this conversation to their citation numbers (kept; this answer's cited papers
        are added in place).
        """
        started = time.perf_counter()
        question = clean_question(question)
        cfg = self.settings
        llm, notes = self.backend_for(backend)
        query = clean_question(query) if query else self.retrieval_query(question, llm)
        result = self.retriever.search(query, k=k or cfg.answer.max_context_papers, filters=filters,
                                       dense_weight=dense_weight)
        t_retrieved = time.perf_counter()
        answer = Answer(question=question, query=query, backend=llm.name if llm else "extractive",
                        model=llm.model if llm else "sentence selection", notes=list(notes),
                        confidence=result.confidence, retrieved=[h.as_dict() for h in result.hits])
        answer.notes += result.notices
        answer.timings["retrieval_s"] = t_retrieved - started
        numbered = self._number(result.hits, numbers)
        prompted = self.in_prompt(numbered)

        abstain, reason = self.should_abstain(result)
        if not abstain and (unmentioned := self.counts_unmentioned(query, prompted)):
            abstain, reason = True, unmentioned
        text, delimiter = "", ""
        try:
            if not abstain and llm is not None:
                delimiter = f"SOURCE-{secrets.token_hex(4)}"
                base = self.prompt_parts(question, prompted, llm, history, delimiter)
                if cfg.answer.verify != "off" and llm.capable:
                    answer.verdict = llm.choose(self.messages_for(base, prompts.CHECK_INSTRUCTION), ["yes", "no"])
                    answer.timings["verify_s"] = time.perf_counter() - t_retrieved
                    if answer.verdict == "no" and cfg.answer.verify == "abstain":
                        abstain, reason = True, VERDICT_NO
                if not abstain:
                    temp = cfg.llm.temperature if temperature is None else temperature
                    cite = [n for n, _ in prompted] if cfg.answer.constrained else []
                    for delta in llm.stream(self.messages_for(base, prompts.ANSWER_INSTRUCTION),
                                            max_tokens=cfg.llm.max_new_tokens, temperature=temp, cite=cite):
                        if not text:
                            answer.timings["ttft_s"] = time.perf_counter() - started
                        text += delta
                        yield Event("token", delta)
                        if repeats_itself(text):
                            answer.notes.append("generation stopped: the model was repeating itself")
                            break
            elif not abstain:
                text = self._extractive(question, prompted)
                answer.timings["ttft_s"] = time.perf_counter() - started
                yield Event("token", text)
        except BackendError as err:
            text = err.partial if isinstance(err, StreamInterrupted) and err.partial else text
            answer.incomplete, answer.error = True, err.user_message()
        if abstain:
            self._abstain(answer, reason, numbered)
            answer.timings.setdefault("ttft_s", time.perf_counter() - started)
            yield Event("token", answer.answer)
        else:
            answer.timings.setdefault("ttft_s", time.perf_counter() - started)
            self._finish(answer, text, numbered, delimiter, prompted)
        if numbers is not None:
            numbers.update({c.paper.id: c.number for c in answer.citations})
        answer.timings["total_s"] = time.perf_counter() - started
        yield Event("done", answer=answer)

    # ---------------------------------------------------------- steps

    @staticmethod
    def retrieval_query(question: str, llm: Backend | None) -> str:
        """The question, or its English translation by a capable model when it is in another language
        (the embedder and BM25 are English); the answer is still written in the question's language."""
        if llm is None or not llm.capable or is_english(question):
            return question
        try:
            reply = "".join(llm.stream([Message("user", prompts.TRANSLATE_PROMPT.format(question=question))],
                                       max_tokens=80, temperature=0.0))
        except BackendError:
            return question
        return one_line_reply(reply) or question

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
        mention X (`rag.support.uncounted`); None otherwise."""
        counted = uncounted(query, (f"{hit.paper.title} {hit.paper.abstract}" for _, hit in prompted))
        return f"the question counts {counted}, which no retrieved abstract mentions" if counted else None

    def in_prompt(self, numbered: list[tuple[int, PaperHit]]) -> list[tuple[int, PaperHit]]:
        """The numbered papers that go into the prompt: those scoring at least
        ``answer.context_min_score`` of the best one (a distant fifth paper only invites a citation)."""
        top = max((hit.score for _, hit in numbered), default=0.0)
        return [(n, hit) for n, hit in numbered if hit.score >= self.settings.answer.context_min_score * top]

    @staticmethod
    def _abstain(answer: Answer, reason: str | None, numbered: list[tuple[int, PaperHit]]) -> None:
        answer.abstained, answer.abstain_reason = True, reason
        answer.answer, answer.sentences, answer.citations = prompts.ABSTAIN_PHRASE, [], []
        answer.also_retrieved = [Citation(n, h.paper, False, h.score) for n, h in numbered]

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

    def prompt_parts(self, question: str, numbered: list[tuple[int, PaperHit]], llm: Backend,
                     history: Sequence[Message] = (), delimiter: str = "SOURCE") -> tuple[list[Message], str]:
        """(system + bounded history, the user message without its final instruction): sources
        fenced and fitted to the backend's prompt budget, best papers first, whole sentences only."""
        history = list(history)
        longest = max(prompts.ANSWER_INSTRUCTION, prompts.CHECK_INSTRUCTION, key=len)
        budget = llm.prompt_budget - llm.count_tokens(prompts.SYSTEM_PROMPT) - llm.count_tokens(question) \
            - llm.count_tokens(longest) - 60 - sum(llm.count_tokens(m.content) for m in history)
        sources = []
        for number, hit in numbered:
            text = self._source_text(hit)
            sentences = split_sentences(text) or [text]
            while sentences:
                block = prompts.SOURCE_TEMPLATE.format(
                    number=number, title=hit.paper.title, year=f" ({hit.paper.year})" if hit.paper.year else "",
                    delimiter=delimiter, text=" ".join(sentences))
                cost = llm.count_tokens(block)
                if cost <= budget:
                    sources.append(block)
                    budget -= cost
                    break
                sentences.pop()  # drop whole sentences from the end, never cut one
            if not sentences:
                break
        # the instruction goes last, appended by `messages_for` (never substituted into text that
        # holds abstracts, which may contain anything, "{instruction}" included)
        user = prompts.USER_TEMPLATE.format(sources="\n\n".join(sources), question=question, delimiter=delimiter,
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
        candidates = [(n, s) for n, hit in numbered[:3] for s in split_sentences(hit.paper.abstract)]
        if not candidates:
            return prompts.ABSTAIN_PHRASE
        # sentence-to-question support, plus a prior for how well its paper matched the question
        # (the retrieval score is fused over the whole paper: names and acronyms weigh in there)
        prior = {n: hit.score for n, hit in numbered}
        top = max(prior.values()) or 1.0
        scores = self.support.support_scores([question], [s for _, s in candidates])[0] + \
            np.array([0.25 * prior[n] / top for n, _ in candidates])
        ranked = sorted(range(len(candidates)), key=lambda i: -scores[i])
        best = scores[ranked[0]]
        picked = [i for i in ranked[:max_sentences] if scores[i] >= best - 0.1]
        picked.sort(key=lambda i: (candidates[i][0], i))  # group by paper, abstract order
        return " ".join(f"\u201c{candidates[i][1].rstrip()}\u201d [{candidates[i][0]}]" for i in picked)

    def _finish(self, answer: Answer, text: str, numbered: list[tuple[int, PaperHit]], delimiter: str = "",
                prompted: list[tuple[int, PaperHit]] | None = None) -> None:
        """Scrub, parse and check the model's text into ``answer``: the ``prompted`` papers (all
        numbered ones when None) were in the prompt and can be cited, the rest are only listed."""
        by_number = dict(numbered if prompted is None else prompted)
        answer.generated = text
        text, answer.removed = scrub(text, delimiter)
        clean, _, invalid = parse_citations(text, list(by_number))
        answer.invalid_citations = invalid
        papers = {n: hit.paper for n, hit in by_number.items()}
        checked = self.support.check(clean, papers, given=f"{answer.question}\n{answer.query}")
        answer.sentences = [s for s, _, _ in checked]
        if not answer.incomplete and (
                answer.sentences and not any(s.claim or s.citations and not says_no_answer(s.text)
                                             for s in answer.sentences)
                or answer.sentences and says_no_answer(answer.sentences[0].text)):
            # only "not stated" sentences, or one first: the answer to what was asked is that it is not there
            self._abstain(answer, "the model said the papers do not answer it", numbered)
            return
        for s, original, _ in checked:  # re-attributed and named sentences replace what the model wrote
            if s.text != original:
                clean = clean.replace(original, s.text, 1)
        answer.answer = clean
        cited = list(dict.fromkeys(n for s in answer.sentences for n in s.citations))
        citations = {n: Citation(n, by_number[n].paper, True, by_number[n].score) for n in cited}
        for _, _, evidence in checked:
            for e in evidence:
                citations[e.number].evidence.append(e)
        answer.citations = [citations[n] for n in cited]
        answer.also_retrieved = [Citation(n, h.paper, False, h.score) for n, h in numbered if n not in citations]
