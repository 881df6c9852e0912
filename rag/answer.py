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
5. check every answer sentence against the abstract sentences of every numbered paper
   (embedding cosine blended with content-word overlap: local and deterministic, no LLM judge):
   a sentence whose cited papers do not support it, but another numbered paper does, is
   re-attributed to that paper (the model picked the wrong number or none); sentences no paper
   supports are marked unsupported. The source list puts cited papers first, the rest as
   "also retrieved".

Left out: choosing and talking to LLM servers (`rag.llm`), conversations (`rag.chat`).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
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

MAX_QUESTION_CHARS = MAX_QUERY_CHARS  # one limit for what is searched and what is answered
_PLACEHOLDER = re.compile(r"\[(?:n|N|x|X|\?|\.\.\.|number)\]")  # a template's marker copied literally
_CITATION = re.compile(r"\[(?:(?:source|paper|ref)\s*)?(\d+(?:\s*(?:[,;]|[-–])\s*\d+)*)\]", re.I)
_WORD = re.compile(r"[a-z0-9]+(?:[-.][a-z0-9]+)*")
_ASKS_FOR_PAPERS = re.compile(r"\b(?:which|what)\s+(?:\w+\s+)?(?:papers?|works?|stud(?:y|ies)|articles?|"
                              r"publications?)\b|\bis\s+there\s+(?:a|any)\s+(?:paper|work|study|research)\b", re.I)
# a sentence whose citation markers all come at its end ("... 146B parameters [1][2].")
_TRAILING_MARKERS = re.compile(r"[^\[]*?(?:\s*\[\d+\])+\s*[.!?\u3002]?\s*")
# citation markers in the place of a noun: after a verb or preposition, or in a list of them
_NOUN_MARKERS = re.compile(r"(\b(?:is|are|was|were|in|by|see|from|and|or|called|titled|namely)\s+)"
                           r"((?:\[\d+\](?:\s*,\s*(?:and\s+)?|\s+(?:and|or)\s+)?)+)", re.I)


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def content_words(text: str) -> set[str]:
    stop = _stopwords()
    return {w for w in _WORD.findall(text.lower()) if w not in stop and len(w) > 1}


def stems(words: Iterable[str]) -> set[str]:
    """Snowball stems (the lexical index's stemmer): "introduces" and "introduced" are one word."""
    import Stemmer  # one per call: PyStemmer objects are not thread-safe, and making one is cheap

    return set(Stemmer.Stemmer("english").stemWords(list(words)))


def new_words(claim: str, given: str) -> set[str]:
    """Stemmed content words of an answer sentence that the question (``given``) did not already
    hold, without the words that only point at a paper or say yes/no: what the sentence adds.

    >>> sorted(new_words("The AlgoPerf benchmark is introduced in [1].", "Which paper introduces AlgoPerf?"))
    ['benchmark']
    >>> sorted(new_words("Yes, there is work on that [2].", "Is there work on that?"))
    []
    """
    return stems(content_words(strip_citations(claim))) - stems(content_words(given)) - _GIVEN_WORDS


def numbers_in(text: str) -> set[str]:
    """The numbers a text states, thousands separators dropped (citation markers are not numbers).

    >>> sorted(numbers_in("It reaches 58.2% with 7,000 samples and 7 GPUs [2]."))
    ['58.2', '7', '7000']
    """
    return {m.replace(",", "") for m in re.findall(r"(?<![\w.\[])\d+(?:,\d{3})*(?:\.\d+)?(?![\w\]])",
                                                   _CITATION.sub(" ", text))}


def anchors(text: str) -> set[str]:
    """Names and numbers, which read the same in every language: tokens holding a digit or a
    capital after their first letter ("33", "FINDAP", "Llama-Fin"), lower-cased.

    >>> sorted(anchors("Le modèle Llama-Fin, évalué sur 33 jeux (FINDAP)."))
    ['33', 'findap', 'llama-fin']
    """
    tokens = re.findall(r"[^\W_]+(?:[-.][^\W_]+)*", text)
    return {t.lower() for t in tokens if any(c.isdigit() for c in t) or any(c.isupper() for c in t[1:])}


def names_title(sentence: str, title: str) -> bool:
    """The sentence names the paper: it holds 80% of the title's content words.

    >>> names_title("It is called DenseNets Reloaded [1].", "DenseNets Reloaded: Paradigm Shift Beyond ResNets")
    False
    >>> names_title("This is SEED-GRPO: Semantic Entropy GRPO [1].", "SEED-GRPO: Semantic Entropy GRPO")
    True
    """
    words = content_words(title)
    return bool(words) and len(words & content_words(sentence)) >= 0.8 * len(words)


def asks_for_papers(question: str) -> bool:
    """The question asks which paper or papers (its answer is a title).

    >>> asks_for_papers("Which paper proposes SetFit?"), asks_for_papers("What does SetFit propose?")
    (True, False)
    """
    return bool(_ASKS_FOR_PAPERS.search(question))


def title_markers(sentence: str, titles: dict[int, str]) -> str:
    """The first marker of each paper in ``titles`` that follows a name ("SetFit [1]") preceded by
    the paper's title in parentheses; markers after other words are left alone.

    >>> title_markers("SetFit [1] needs no prompts [1].", {1: "Efficient Few-Shot Learning"})
    'SetFit (\u201cEfficient Few-Shot Learning\u201d) [1] needs no prompts [1].'
    >>> title_markers("It builds on Gaussian Splatting [1].", {1: "Efficient Few-Shot Learning"})
    'It builds on Gaussian Splatting [1].'
    """
    for n, title in titles.items():
        for m in re.finditer(rf"([^\s\[\]()]+)\s*\[{n}\]", sentence):
            if anchors(m.group(1)):  # a name: "SetFit", "CSQ", "Meta-DMoE", not "Splatting" or "2021)"
                at = m.end(1)
                sentence = f"{sentence[:at]} (\u201c{title}\u201d){sentence[at:]}"
                break
    return sentence


def name_papers(sentence: str, titles: dict[int, str]) -> str:
    """A sentence that uses a bare citation as a noun ("AlgoPerf is introduced in [1].", "... are [1]
    and [2].") with each such paper's title written before its marker: a reader needs the name.

    >>> name_papers("The benchmark is introduced in [1].", {1: "Benchmarking Training Algorithms"})
    'The benchmark is introduced in \u201cBenchmarking Training Algorithms\u201d [1].'
    >>> name_papers("They are [1], [2] and [3].", {1: "A", 2: "B", 3: "C"})
    'They are \u201cA\u201d [1], \u201cB\u201d [2] and \u201cC\u201d [3].'
    >>> name_papers("SetFit [1] needs no prompts.", {1: "Efficient Few-Shot Learning"})
    'SetFit [1] needs no prompts.'
    """
    def titled(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return f"\u201c{titles[n]}\u201d {m.group(0)}" if n in titles else m.group(0)

    return _NOUN_MARKERS.sub(lambda m: m.group(1) + re.sub(r"\[(\d+)\]", titled, m.group(2)), sentence)


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
    attributed: bool = False  # the citations were set by the evidence check, not written by the model
    claim: bool = True        # False: the sentence says the abstracts do not hold something

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
    removed: list[str] = field(default_factory=list)  # text that leaked from the prompt, taken out
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
            "removed": self.removed, "verdict": self.verdict,
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

    out = _CITATION.sub(replace, text)
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


def says_no_answer(sentence: str) -> bool:
    """The sentence says the abstracts do not hold something (and so makes no claim).

    >>> says_no_answer("The abstract does not mention the learning rate."), says_no_answer("It uses 8 GPUs [1].")
    (True, False)
    """
    return prompts.ABSTAIN_PHRASE.lower().rstrip(".") in sentence.lower() or bool(prompts.NO_ANSWER.search(sentence))


def with_citations(sentence: str, numbers: Sequence[int]) -> str:
    """The sentence with its citation markers replaced by ``numbers``, placed before the final stop.

    >>> with_citations("It has 146B parameters [2].", [1]), with_citations("It works", [3, 4])
    ('It has 146B parameters [1].', 'It works [3][4]')
    """
    body = strip_citations(sentence)
    end = body[-1] if body and body[-1] in ".!?。" else ""
    marks = "".join(f"[{n}]" for n in numbers)
    return f"{body[: len(body) - len(end)].rstrip()} {marks}{end}" if marks else body


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


def is_english(text: str) -> bool:
    """Whether a question reads as English (function words), so retrieval with an English embedder works.

    >>> is_english("How many parameters does Skywork-MoE have?"), is_english("Wie viele Parameter hat Skywork-MoE?")
    (True, False)
    >>> is_english("UNICE 论文一共收集了多少张 HDR 原始图像？")
    False
    """
    if re.search(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\u0400-\u04ff\u0600-\u06ff]", text):
        return False
    words = re.findall(r"[^\W\d_]+", text.lower())
    if len(words) < 3:
        return True
    return sum(w in _ENGLISH for w in words) / len(words) >= 0.1


# Words of a sentence that only points at a paper ("This is described in [1].")
_POINTER_WORDS = frozenset(["described", "discussed", "proposed", "presented", "introduced", "mentioned", "shown",
                            "demonstrated", "reported", "studied", "explored", "investigated", "addressed",
                            "paper", "papers", "work", "abstract", "abstracts", "study", "research", "source"])
# Stems that add nothing to what a question said: pointing at a paper, yes/no, naming
_GIVEN_WORDS = frozenset(stems([*_POINTER_WORDS, "yes", "no", "called", "named", "name", "titled", "title",
                                "model", "method", "approach", "propose", "introduce", "present", "describe",
                                "can", "could", "may", "might", "will", "would", "should", "must", "also", "from",
                                "has", "have", "having", "had", "been", "being", "does", "did", "done"]))

# English function and question words: a question with none of them among its words is not English
_ENGLISH = frozenset([
    "the", "a", "an", "of", "in", "on", "for", "to", "what", "which", "who", "how", "why", "when", "where",
    "does", "do", "did", "is", "are", "was", "were", "and", "or", "with", "by", "from", "that", "this",
    "these", "those", "many", "much", "it", "its", "can", "than", "between", "about", "any", "there",
])


def one_line_reply(text: str, limit: int = 300) -> str | None:
    """The first line of a model's reply, unquoted, if it is a plausible query.

    >>> one_line_reply('"Skywork-MoE number of experts"\\nExplanation: ...')
    'Skywork-MoE number of experts'
    """
    line = text.strip().splitlines()[0].strip().strip('"\'`') if text.strip() else ""
    line = re.sub(r"^(?:standalone )?(?:search )?query:\s*", "", line, flags=re.I)
    return line if 3 <= len(line) <= limit else None


def answer_sentences(text: str) -> list[str]:
    """Sentences of an answer, each keeping the citation markers written after its full stop.

    >>> answer_sentences("A holds. [1] B holds [2]. C.")
    ['A holds. [1]', 'B holds [2].', 'C.']
    """
    out: list[str] = []
    for sentence in split_sentences(text):
        lead = re.match(r"^((?:\[[^\]]*\]\s*)+)(.*)$", sentence)
        # markers before a new sentence belong to the previous one; before a verb ("[1] proposes
        # X") they are this sentence's subject
        if lead and out and _CITATION.fullmatch(lead.group(1).split()[0]) and not lead.group(2)[:1].islower():
            out[-1] = f"{out[-1]} {lead.group(1).strip()}"
            sentence = lead.group(2).strip()
        if sentence:
            out.append(sentence)
    return out


def sentence_citations(sentence: str) -> list[int]:
    return [int(n) for m in _CITATION.finditer(sentence) for n in re.findall(r"\d+", m.group(1))]


def strip_citations(sentence: str) -> str:
    return re.sub(r"\s+([.,;:!?])", r"\1", " ".join(_CITATION.sub(" ", sentence).split()))


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
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._vectors_lock = threading.Lock()  # the cache is shared by the threads answering at once

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
        text, delimiter = "", ""
        try:
            if not abstain and llm is not None:
                delimiter = f"SOURCE-{secrets.token_hex(4)}"
                base = self.prompt_parts(question, prompted, llm, history, delimiter)
                if cfg.answer.verify != "off" and llm.capable:
                    answer.verdict = llm.choose(self.messages_for(base, prompts.CHECK_INSTRUCTION), ["yes", "no"])
                    answer.timings["verify_s"] = time.perf_counter() - t_retrieved
                    if answer.verdict == "no" and cfg.answer.verify == "abstain":
                        abstain, reason = True, "the model found that no retrieved abstract states the answer"
                if not abstain:
                    temp = cfg.llm.temperature if temperature is None else temperature
                    cite = [n for n, _ in numbered] if cfg.answer.constrained else []
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
        scores = self.support_scores([question], [s for _, s in candidates])[0] + \
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
        text, answer.removed = scrub(text, delimiter)
        clean, _, invalid = parse_citations(text, list(by_number))
        answer.invalid_citations = invalid
        checked = self._check_sentences(clean, by_number, given=f"{answer.question}\n{answer.query}")
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

    def _check_sentences(self, text: str, by_number: dict[int, PaperHit], given: str = ""
                         ) -> list[tuple[AnswerSentence, str, list[Evidence]]]:
        """Each sentence scored against the numbered papers: (checked sentence, as written, its evidence).

        ``given`` is what the user asked (the question, a line break, the retrieval query). A sentence that adds no word
        to it (a restatement, "Yes.", "This is described in [1].") or says the abstracts do not hold
        something is no claim: kept, not checked, its bare markers named by title. A claim is scored
        on the words it adds (`support_scores`); a number it adds must be in the paper; a claim in
        another language is also scored by its names and numbers found in the paper (`anchors`). A
        claim keeps the citations the model wrote when one of them supports it; otherwise the
        best-supporting numbered paper replaces them (``answer.attribute``); else it is unsupported.
        """
        threshold = self.settings.answer.support_threshold
        english = is_english(given.split("\n")[0])
        titles = {n: hit.paper.title for n, hit in by_number.items()}
        named: set[int] = set()  # papers whose title the answer already gave
        out: list[tuple[AnswerSentence, str, list[Evidence]]] = []
        for sentence in answer_sentences(text):
            written = [n for n in dict.fromkeys(sentence_citations(sentence)) if n in by_number]
            claim = strip_citations(sentence).strip("\u201c\u201d\" ")
            added = new_words(claim, given)
            if not added or says_no_answer(claim):
                shown = name_papers(sentence, titles) if not says_no_answer(claim) else sentence
                out.append((AnswerSentence(shown, written, True, 0.0, claim=False), sentence, []))
                continue
            numbers = numbers_in(claim) - numbers_in(given)
            names = set() if english and is_english(claim) else anchors(claim)
            best: dict[int, tuple[float, str]] = {}
            for n, hit in by_number.items():
                if n in written or self.settings.answer.attribute:
                    paper_sentences = split_sentences(hit.paper.abstract) or [hit.paper.abstract]
                    if names_title(claim, hit.paper.title):  # "It is called DenseNets Reloaded [1]."
                        paper_sentences = [hit.paper.title, *paper_sentences]
                    scores = self.support_scores([claim], paper_sentences, added=[added])[0]
                    if names:
                        scores = np.maximum(scores, [len(names & anchors(ps)) / len(names) for ps in paper_sentences])
                    if numbers:  # a number the paper does not hold is not supported by it
                        held = numbers_in(f"{hit.paper.title} {hit.paper.abstract}")
                        scores = scores * (len(numbers & held) / len(numbers))
                    i = int(np.argmax(scores))
                    best[n] = (float(scores[i]), paper_sentences[i])
            cites, attributed = written, False
            supporting = [n for n in written if best[n][0] >= threshold]
            if _TRAILING_MARKERS.fullmatch(sentence) or not written:
                # markers only at the end can be corrected: the unsupported ones dropped when another
                # supports the sentence, all replaced by the best-supporting paper when none does
                if supporting and supporting != written:
                    cites, attributed = supporting, True
                elif not supporting and best:
                    top = max(best, key=lambda n: best[n][0])
                    if best[top][0] >= threshold:
                        cites, attributed = [top], True
            score = max((best[n][0] for n in cites), default=0.0)
            shown = with_citations(sentence, cites) if attributed else sentence
            if asks_for_papers(given.split("\n")[0]):  # "Which paper proposes SetFit?" is answered by a title
                unnamed = {n: titles[n] for n in cites if n not in named and not names_title(shown, titles[n])}
                shown = title_markers(shown, unnamed)
                named.update(cites)
            evidence = [Evidence(n, by_number[n].paper.id, best[n][1], round(best[n][0], 4), shown) for n in cites]
            out.append((AnswerSentence(shown, cites, score >= threshold, round(score, 4), attributed=attributed),
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
