"""Question -> cited answer: abstention, prompting, streaming, citation and evidence checks.

The steps, in order:

1. retrieve papers (`rag.retrieval`), then decide *before* any LLM call whether to
   abstain, from retrieval confidence (thresholds calibrated on the development set's
   unanswerable questions; a small model cannot be trusted to abstain);
2. number the papers one per paper ([1]..[k], stable within a conversation), fence each
   source with a random delimiter, fit them into the backend's window without cutting
   sentences, and stream the LLM's answer (or compose an extractive one: no LLM);
3. parse the citations, drop numbers that match no source (counted), and map them to
   papers; the source list puts cited papers first, the rest as "also retrieved";
4. check every answer sentence against the abstract sentences of the papers it cites
   (embedding cosine blended with content-word overlap: local and deterministic, no LLM
   judge) and mark those below the support threshold as unsupported.

Left out: choosing and talking to LLM servers (`rag.llm`), conversations (`rag.chat`).
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag import prompts
from rag.chunking import split_sentences
from rag.corpus import Paper, clean_text
from rag.embeddings import Embedder
from rag.errors import BackendError, InputError
from rag.retrieval import Confidence, Filters, PaperHit, Retriever, SearchResult
from rag.settings import Settings

MAX_QUESTION_CHARS = 2000
_CITATION = re.compile(r"\[(?:(?:source|paper|ref)\s*)?(\d+(?:\s*(?:[,;]|[-–])\s*\d+)*)\]", re.I)
_WORD = re.compile(r"[a-z0-9]+(?:[-.][a-z0-9]+)*")


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def content_words(text: str) -> set[str]:
    stop = _stopwords()
    return {w for w in _WORD.findall(text.lower()) if w not in stop and len(w) > 1}


# ------------------------------------------------------------------ result objects


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
class AnswerSentence:
    text: str
    citations: list[int]
    supported: bool
    score: float  # best evidence score (0 when nothing is cited)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
    text = clean_text(question)
    if not text:
        raise InputError("the question is empty", "type a question about the papers")
    if len(text) > MAX_QUESTION_CHARS:
        raise InputError(f"the question is {len(text):,} characters long (limit {MAX_QUESTION_CHARS:,})",
                         "ask a shorter question; put long text in a corpus file instead")
    return text


def parse_citations(text: str, valid: Sequence[int]) -> tuple[str, list[int], int]:
    """Citation markers -> (text without invalid markers, valid numbers in order, invalid count).

    >>> parse_citations("A [1]. B [2, 7]. C [1-2].", [1, 2])
    ('A [1]. B [2]. C [1][2].', [1, 2], 1)
    """
    valid_set, cited, invalid = set(valid), [], 0

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

    out = _CITATION.sub(replace, text)
    out = re.sub(r"[ \t]+([.,;:])", r"\1", re.sub(r"[ \t]{2,}", " ", out)).strip()
    return out, cited, invalid


def answer_sentences(text: str) -> list[str]:
    """Sentences of an answer, each keeping the citation markers written after its full stop.

    >>> answer_sentences("A holds. [1] B holds [2]. C.")
    ['A holds. [1]', 'B holds [2].', 'C.']
    """
    out: list[str] = []
    for sentence in split_sentences(text):
        lead = re.match(r"^((?:\[[^\]]*\]\s*)+)(.*)$", sentence)
        if lead and out and _CITATION.fullmatch(lead.group(1).split()[0]):
            out[-1] = f"{out[-1]} {lead.group(1).strip()}"
            sentence = lead.group(2).strip()
        if sentence:
            out.append(sentence)
    return out


def sentence_citations(sentence: str) -> list[int]:
    return [int(n) for m in _CITATION.finditer(sentence) for n in re.findall(r"\d+", m.group(1))]


def strip_citations(sentence: str) -> str:
    return " ".join(_CITATION.sub(" ", sentence).split())


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
                 backend: Any | None = None) -> None:
        self.settings = settings
        self.embedder = embedder or (retriever.embedder if retriever else Embedder(settings.embedding))
        self.retriever = retriever or Retriever(settings, embedder=self.embedder)
        self._backend = backend  # an rag.llm Backend, or None (resolved lazily)
        self._backend_resolved = backend is not None
        self._notes: list[str] = []
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    # ---------------------------------------------------------- backends

    def backend_for(self, name: str | None = None) -> tuple[Any | None, list[str]]:
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
               history: Sequence[Any] = (), numbers: dict[str, int] | None = None,
               temperature: float | None = None, dense_weight: float | None = None) -> Iterator[Event]:
        """Yield token events as the answer is written, then one ``done`` event with the `Answer`.

        ``query`` is the retrieval query (a condensed follow-up); ``numbers`` maps paper ids
        to citation numbers already used in this conversation (updated in place).
        """
        started = time.perf_counter()
        question = clean_question(question)
        query = clean_question(query) if query else question
        cfg = self.settings
        result = self.retriever.search(query, k=k or cfg.answer.max_context_papers, filters=filters,
                                       dense_weight=dense_weight)
        t_retrieved = time.perf_counter()
        llm, notes = self.backend_for(backend)
        answer = Answer(question=question, query=query, backend=llm.name if llm else "extractive",
                        model=llm.model if llm else "sentence selection", notes=list(notes),
                        confidence=result.confidence, retrieved=[h.as_dict() for h in result.hits])
        answer.notes += result.notices
        answer.timings["retrieval_s"] = t_retrieved - started
        numbered = self._number(result.hits, numbers)

        abstain, reason = self.should_abstain(result)
        if abstain:
            answer.abstained, answer.abstain_reason = True, reason
            answer.answer = prompts.ABSTAIN_PHRASE
            answer.also_retrieved = [Citation(n, h.paper, False, h.score) for n, h in numbered]
            answer.timings["ttft_s"] = answer.timings["total_s"] = time.perf_counter() - started
            yield Event("token", answer.answer)
            yield Event("done", answer=answer)
            return

        text = ""
        try:
            if llm is None:
                text = self._extractive(question, numbered)
                answer.timings["ttft_s"] = time.perf_counter() - started
                yield Event("token", text)
            else:
                messages = self.messages(question, numbered, llm, history)
                temp = cfg.llm.temperature if temperature is None else temperature
                for delta in llm.stream(messages, max_tokens=cfg.llm.max_new_tokens, temperature=temp):
                    if not text:
                        answer.timings["ttft_s"] = time.perf_counter() - started
                    text += delta
                    yield Event("token", delta)
                    if repeats_itself(text):
                        answer.notes.append("generation stopped: the model was repeating itself")
                        break
        except BackendError as err:
            from rag.llm import StreamInterrupted

            text = err.partial if isinstance(err, StreamInterrupted) and err.partial else text
            answer.incomplete, answer.error = True, err.user_message()
        answer.timings.setdefault("ttft_s", time.perf_counter() - started)
        self._finish(answer, text, numbered)
        answer.timings["total_s"] = time.perf_counter() - started
        yield Event("done", answer=answer)

    # ---------------------------------------------------------- steps

    def should_abstain(self, result: SearchResult) -> tuple[bool, str | None]:
        """Abstain when retrieval found nothing close enough (calibrated thresholds)."""
        if not result.hits:
            return True, result.empty_because or "no paper matched"
        c, cfg = result.confidence, self.settings.answer
        if c.dense_top < cfg.abstain_threshold and c.coverage < cfg.abstain_coverage:
            return True, (f"best passage similarity {c.dense_top:.2f} < {cfg.abstain_threshold:.2f} and the top "
                          f"paper holds {c.coverage:.0%} of the question's terms (< {cfg.abstain_coverage:.0%})")
        return False, None

    def _number(self, hits: list[PaperHit], numbers: dict[str, int] | None) -> list[tuple[int, PaperHit]]:
        """One number per paper; numbers already given in this conversation are kept."""
        numbers = {} if numbers is None else numbers
        out = []
        for hit in hits:
            if hit.paper.id not in numbers:
                numbers[hit.paper.id] = max(numbers.values(), default=0) + 1
            out.append((numbers[hit.paper.id], hit))
        return out

    def messages(self, question: str, numbered: list[tuple[int, PaperHit]], llm: Any,
                 history: Sequence[Any] = ()) -> list[Any]:
        """System + (bounded) history + user message with fenced sources fitted to the window."""
        from rag.llm import Message

        delimiter = f"SOURCE-{secrets.token_hex(4)}"
        system = prompts.SYSTEM_PROMPT.format(abstain=prompts.ABSTAIN_PHRASE, delimiter=delimiter)
        history = list(history)
        window = llm.context_window - self.settings.llm.max_new_tokens
        if llm.name == "llamacpp":
            window = min(window, self.settings.llm.llamacpp_prompt_tokens)
        budget = window - llm.count_tokens(system) - llm.count_tokens(question) - 60 \
            - sum(llm.count_tokens(m.content) for m in history)
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
        user = prompts.USER_TEMPLATE.format(sources="\n\n".join(sources), question=question)
        return [Message("system", system), *history, Message("user", user)]

    def _source_text(self, hit: PaperHit) -> str:
        """The paper's best chunks in abstract order (the whole abstract when it is short)."""
        if len(hit.paper.abstract) < 1200 or not hit.chunks:
            return hit.paper.abstract
        order = sorted(hit.chunks, key=lambda c: int(c.chunk_id.rsplit("#", 1)[1]))
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
        scores = self.support_scores([question], [s for _, s in candidates])[0] + \
            np.array([0.25 * prior[n] / top for n, _ in candidates])
        ranked = sorted(range(len(candidates)), key=lambda i: -scores[i])
        best = scores[ranked[0]]
        picked = [i for i in ranked[:max_sentences] if scores[i] >= best - 0.1]
        picked.sort(key=lambda i: (candidates[i][0], i))  # group by paper, abstract order
        return " ".join(f"\u201c{candidates[i][1].rstrip()}\u201d [{candidates[i][0]}]" for i in picked)

    def _finish(self, answer: Answer, text: str, numbered: list[tuple[int, PaperHit]]) -> None:
        by_number = {n: hit for n, hit in numbered}
        clean, cited, invalid = parse_citations(text, list(by_number))
        answer.answer, answer.invalid_citations = clean, invalid
        if prompts.ABSTAIN_PHRASE.lower().rstrip(".") in clean.lower() and not cited:
            answer.abstained, answer.abstain_reason = True, "the model said the papers do not answer it"
        citations = {n: Citation(n, by_number[n].paper, True, by_number[n].score) for n in cited}
        answer.sentences = self._check_sentences(clean, citations)
        answer.citations = [citations[n] for n in cited]
        answer.also_retrieved = [Citation(n, h.paper, False, h.score) for n, h in numbered if n not in citations]

    def _check_sentences(self, text: str, citations: dict[int, Citation]) -> list[AnswerSentence]:
        threshold = self.settings.answer.support_threshold
        out = []
        for sentence in answer_sentences(text):
            numbers = [n for n in dict.fromkeys(sentence_citations(sentence)) if n in citations]
            claim = strip_citations(sentence).strip("\u201c\u201d\" ")
            if not numbers or not content_words(claim):
                out.append(AnswerSentence(sentence, numbers, not content_words(claim), 0.0))
                continue
            best_score = 0.0
            for n in numbers:
                paper_sentences = split_sentences(citations[n].paper.abstract) or [citations[n].paper.abstract]
                scores = self.support_scores([claim], paper_sentences)[0]
                i = int(np.argmax(scores))
                best_score = max(best_score, float(scores[i]))
                citations[n].evidence.append(Evidence(n, citations[n].paper.id, paper_sentences[i],
                                                      round(float(scores[i]), 4), sentence))
            out.append(AnswerSentence(sentence, numbers, best_score >= threshold, round(best_score, 4)))
        return out

    # ---------------------------------------------------------- scoring

    def _encode(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            for text, vector in zip(missing, self.embedder.encode(missing)):
                self._vectors[text] = vector
        while len(self._vectors) > 20_000:
            self._vectors.popitem(last=False)
        return np.stack([self._vectors[t] for t in texts])

    def support_scores(self, claims: list[str], sentences: list[str]) -> np.ndarray:
        """claims x sentences: 0.6 * cosine + 0.4 * share of the claim's content words in the sentence.

        Quoting a sentence scores 1.0; a paraphrase scores on its cosine; an unrelated
        sentence scores near 0.
        """
        cos = self._encode(claims) @ self._encode(sentences).T
        overlap = np.zeros_like(cos)
        sentence_words = [content_words(s) for s in sentences]
        for i, claim in enumerate(claims):
            words = content_words(claim)
            if words:
                overlap[i] = [len(words & sw) / len(words) for sw in sentence_words]
        return 0.6 * np.clip(cos, 0, 1) + 0.4 * overlap
