"""Answer sentences checked against the abstracts: what a sentence claims, which numbered paper
supports it, and the abstract sentence that is its evidence.

An answer is cut into sentences, each keeping the citation markers written after its full stop.
A sentence claims the words it adds to the question, stemmed ("introduced" is "introduces"); one
that adds none (a restatement, "Yes.", a pointer such as "This is described in [1].") or says the
abstracts do not hold something is no claim: kept, not checked, its bare markers named by title.
A claim is scored against every sentence of each numbered abstract: embedding cosine blended with
the share of its added words found there (local and deterministic, no LLM judge). A number it adds
must be in the paper; a claim in another language is also scored by its names and numbers
(`anchors`: they read the same in every language); a claim that names a paper's title may be
supported by the title. A claim keeps the markers the model wrote when one of them supports it;
markers only at its end are corrected (``answer.attribute``): the unsupported ones dropped when
another supports it, all replaced by the best-supporting paper when none does; else it is marked
unsupported. When the question asks which paper, each cited paper's first mention gets its title.

Left out: generation, prompts and abstention from retrieval (`rag.answer`).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag import prompts
from rag.chunking import split_sentences
from rag.corpus import Paper
from rag.embeddings import Embedder
from rag.evidence import evidence_text, sentences_of
from rag.language import is_english
from rag.lexical import bm25s_module, stemmer
from rag.settings import AnswerSettings

# a citation marker: "[1]", "[2, 3]", "[1-4]", "[source 2]"; group 1 holds the numbers
CITATION_MARKER = re.compile(r"\[(?:(?:source|paper|ref)\s*)?(\d+(?:\s*(?:[,;]|[-–])\s*\d+)*)\]", re.I)
_WORD = re.compile(r"[a-z0-9]+(?:[-.][a-z0-9]+)*")
_HOW_MANY = re.compile(r"\bhow\s+many\s+([^\W\d_][\w-]*)", re.I)
_ASKS_FOR_PAPERS = re.compile(r"\b(?:which|what)\s+(?:\w+\s+)?(?:papers?|works?|stud(?:y|ies)|articles?|"
                              r"publications?)\b|\bis\s+there\s+(?:a|any)\s+(?:paper|work|study|research)\b", re.I)
# a sentence whose citation markers all come at its end ("... 146B parameters [1][2].")
_TRAILING_MARKERS = re.compile(r"[^\[]*?(?:\s*\[\d+\])+\s*[.!?\u3002]?\s*")
# citation markers in the place of a noun: after a verb or preposition, or in a list of them
_NOUN_MARKERS = re.compile(r"(\b(?:is|are|was|were|in|of|by|see|from|and|or|called|titled|namely|papers?|works?|"
                           r"stud(?:y|ies))\s+)"
                           r"((?:\[\d+\](?:\s*,\s*(?:and\s+)?|\s+(?:and|or)\s+)?)+)", re.I)


# ------------------------------------------------------------------ words


def _stopwords() -> frozenset[str]:
    return frozenset(bm25s_module().stopwords.STOPWORDS_EN)  # bm25s without numba (`rag.lexical.bm25s_module`)


def content_words(text: str) -> set[str]:
    stop = _stopwords()
    return {w for w in _WORD.findall(text.lower()) if w not in stop and len(w) > 1}


def stems(words: Iterable[str]) -> set[str]:
    """Stems by the lexical index's stemmer: "introduces" and "introduced" are one word."""
    return set(stemmer().stemWords(list(words)))


def new_words(claim: str, given: str) -> set[str]:
    """Stemmed content words of an answer sentence that the question (``given``) did not already
    hold, without the words that only point at a paper or say yes/no: what the sentence adds.

    >>> sorted(new_words("The AlgoPerf benchmark is introduced in [1].", "Which paper introduces AlgoPerf?"))
    ['benchmark']
    >>> sorted(new_words("Yes, there is work on that [2].", "Is there work on that?"))
    []
    """
    return stems(content_words(strip_citations(claim))) - stems(content_words(given)) - _GIVEN_WORDS


_ENUMERATOR = re.compile(r"(?m)^\s*\d{1,2}[.)](?=\s|$)")  # "2." opening a list item


def numbers_in(text: str) -> set[str]:
    """The numbers a text states, thousands separators dropped (citation markers and list
    enumerators are not numbers).

    >>> sorted(numbers_in("It reaches 58.2% with 7,000 samples and 7 GPUs [2]."))
    ['58.2', '7', '7000']
    >>> numbers_in("BEAT: Balanced Tuning [3]\\n4.")
    set()
    """
    text = _ENUMERATOR.sub(" ", CITATION_MARKER.sub(" ", text))
    return {m.replace(",", "") for m in re.findall(_NUMBER, text)}


_NUMBER = r"(?<![\w.\[])\d+(?:,\d{3})*(?:\.\d+)?(?![\w\]])"
_WORD_TOKEN = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*")  # letters only: "WikiText-2" is a word and a number
ROLE_WINDOW = 4  # words either side of a number that say what it counts or measures


def number_roles(text: str) -> dict[str, set[str]]:
    """Each number a text states -> the stemmed content words within ``ROLE_WINDOW`` words of it,
    over all its occurrences: what the number is ("16 experts", "a batch size of 16").

    >>> roles = number_roles("Skywork-MoE has 146 billion parameters and 16 experts [1].")
    >>> sorted(roles["16"]), sorted(roles["146"])
    (['billion', 'expert', 'paramet'], ['billion', 'paramet', 'skywork-mo'])
    >>> sorted(number_roles("Perplexity on WikiText-2.")["2"])  # the numbers `numbers_in` finds
    ['perplex', 'wikitext']
    """
    text = _ENUMERATOR.sub(" ", CITATION_MARKER.sub(" ", text))
    found = [*_WORD_TOKEN.finditer(text), *re.finditer(_NUMBER, text)]
    tokens = [m.group() for m in sorted(found, key=lambda m: m.start())]
    stop = _stopwords()
    out: dict[str, set[str]] = {}
    for i, token in enumerate(tokens):
        if token[0].isdigit():
            near = [w.lower() for w in tokens[max(0, i - ROLE_WINDOW): i + ROLE_WINDOW + 1]
                    if not w[0].isdigit() and len(w) > 1 and w.lower() not in stop]
            out.setdefault(token.replace(",", ""), set()).update(stems(near) - _GIVEN_WORDS)
    return out


def claimed_roles(claim: str) -> dict[str, set[str]]:
    """The `number_roles` of an answer sentence, to match an English abstract's: none for a sentence
    in another language (its words cannot match, so its numbers count as held anywhere they occur)."""
    return number_roles(claim) if is_english(claim) else {}


def numbers_held(numbers: set[str], claimed: dict[str, set[str]], stated: dict[str, set[str]]) -> float:
    """The share of a claim's ``numbers`` that a text whose `number_roles` are ``stated`` holds in the
    claim's role (``claimed``: `claimed_roles`): beside one of the words the claim puts beside it, or
    anywhere for a number with no such word. "16" is Skywork-MoE's expert count, not its batch size.

    >>> text = number_roles("Skywork-MoE has 146 billion parameters and 16 experts.")
    >>> numbers_held({"16"}, claimed_roles("It uses 16 experts."), text), \\
    ...     numbers_held({"16"}, claimed_roles("Its batch size is 16."), text)
    (1.0, 0.0)
    >>> numbers_held({"16", "146"}, claimed_roles("16 experts, a batch of 146."), text), \\
    ...     numbers_held({"16"}, claimed_roles("16 [1]."), text)
    (0.5, 1.0)
    """
    if not numbers:
        return 1.0
    return sum(in_role(n, claimed, stated) for n in numbers) / len(numbers)


def in_role(number: str, claimed: dict[str, set[str]], stated: dict[str, set[str]]) -> bool:
    """Whether a text whose `number_roles` are ``stated`` holds ``number`` as the claim (``claimed``) uses it."""
    return number in stated and (not claimed.get(number) or bool(claimed[number] & stated[number]))


def anchors(text: str) -> set[str]:
    """Names and numbers, which read the same in every language: tokens holding a digit or a
    capital after their first letter ("33", "FINDAP", "Llama-Fin"), lower-cased.

    >>> sorted(anchors("Le modèle Llama-Fin, évalué sur 33 jeux (FINDAP)."))
    ['33', 'findap', 'llama-fin']
    """
    tokens = re.findall(r"[^\W_]+(?:[-.][^\W_]+)*", text)
    return {t.lower() for t in tokens if any(c.isdigit() for c in t) or any(c.isupper() for c in t[1:])}


# Words of a sentence that only points at a paper ("This is described in [1].")
_POINTER_WORDS = frozenset(["described", "discussed", "proposed", "presented", "introduced", "mentioned", "shown",
                            "demonstrated", "reported", "studied", "explored", "investigated", "addressed",
                            "paper", "papers", "work", "abstract", "abstracts", "study", "research", "source"])
# Stems that add nothing to what a question said: pointing at a paper, yes/no, naming
_GIVEN_WORDS = frozenset(stems([*_POINTER_WORDS, "yes", "no", "called", "named", "name", "titled", "title",
                                "model", "method", "approach", "propose", "introduce", "present", "describe",
                                "can", "could", "may", "might", "will", "would", "should", "must", "also", "from",
                                "has", "have", "having", "had", "been", "being", "does", "did", "done"]))

# ------------------------------------------------------------------ sentences and their markers


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
        if lead and out and CITATION_MARKER.fullmatch(lead.group(1).split()[0]) and not lead.group(2)[:1].islower():
            out[-1] = f"{out[-1]} {lead.group(1).strip()}"
            sentence = lead.group(2).strip()
        if sentence:
            out.append(sentence)
    return out


def sentence_citations(sentence: str) -> list[int]:
    return [int(n) for m in CITATION_MARKER.finditer(sentence) for n in re.findall(r"\d+", m.group(1))]


def strip_citations(sentence: str) -> str:
    return re.sub(r"\s+([.,;:!?])", r"\1", " ".join(CITATION_MARKER.sub(" ", sentence).split()))


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


def uncounted(question: str, texts: Iterable[str]) -> str | None:
    """What a "how many X" question counts, when none of ``texts`` mentions X (stemmed): no
    abstract can say how many GPUs if none mentions GPUs.

    >>> uncounted("How many GPUs were used to train PLaMo-100B?", ["PLaMo-100B was trained on 2T tokens."])
    'GPUs'
    >>> uncounted("How many tokens was PLaMo-100B trained on?", ["PLaMo-100B was trained on 2T tokens."])
    >>> uncounted("How many of them use RL?", ["..."])
    """
    m = _HOW_MANY.search(question)
    if not m or not content_words(m.group(1)):
        return None
    wanted = stems(content_words(m.group(1)))
    return None if any(wanted & stems(content_words(t)) for t in texts) else m.group(1)


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


_ASKS_WHAT = re.compile(r"^\W*(?:what|which|who|when|where|how\s+(?:many|much|large|long|big|fast|does|do|did|is|"
                        r"are))\b", re.I)


def asks_for_content(question: str) -> bool:
    """The question asks for a thing, a value or a way, not a yes or no, and not which paper: an
    answer that only restates it has not answered it.

    >>> asks_for_content("What peak learning rate was optimal?"), asks_for_content("Is RAdam stable?")
    (True, False)
    >>> asks_for_content("Which paper proposes SetFit?"), asks_for_content("How many GPUs were used?")
    (False, True)
    """
    return bool(_ASKS_WHAT.search(question)) and not asks_for_papers(question)


_LISTS_PAPERS = re.compile(r"\b(?:which|what)\s+(?:\w+\s+)?(?:papers|works|studies|articles|publications|methods|"
                           r"approaches)\b|\b(?:are\s+there|list|find|name)\s+(?:any\s+|all\s+|the\s+)?(?:\w+\s+)?"
                           r"(?:papers|works|studies)\b", re.I)


def lists_papers(question: str) -> bool:
    """The question asks for every paper that does something (its answer is a list).

    >>> lists_papers("Which papers study test-time adaptation?"), lists_papers("Which paper proposes SetFit?")
    (True, False)
    >>> lists_papers("Are there any papers on model merging?"), lists_papers("What methods reduce KV cache memory?")
    (True, True)
    """
    return bool(_LISTS_PAPERS.search(question))


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


def specifics(text: str, given: str) -> set[str]:
    """The numbers and names ``text`` states that ``given`` (what the user asked) did not hold.

    >>> sorted(specifics("Skywork-MoE has 16 experts and CoNLL03 scores [1].", "How many experts has Skywork-MoE?"))
    ['16', 'conll03']
    """
    names = {a for a in anchors(text) if not a.replace(".", "").isdigit()}
    return (numbers_in(text) - numbers_in(given)) | (names - anchors(given))


def holds(text: str, name: str) -> bool:
    """Whether lower-cased ``text`` holds ``name`` as a whole token.

    >>> holds("we train seed-grpo on math", "seed-grpo"), holds("we train seed-grpo", "grpo")
    (True, False)
    >>> holds("qwen2.5-7b-instruct", "qwen2.5-7b")
    True
    """
    return re.search(rf"(?<![\w-]){re.escape(name)}(?!\w)", text) is not None


def held_form(name: str, texts: Iterable[str]) -> str:
    """``name``, or the longest part of it before a hyphen that one of ``texts`` holds: the name
    with a compound or another language's suffix glued on ("SKILL-MIX-ähnlicher" is SKILL-MIX).

    >>> held_form("skill-mix-ähnlicher", ["the skill-mix evaluation"]), held_form("dra-grpo", ["grpo"])
    ('skill-mix', 'dra-grpo')
    """
    texts = list(texts)
    parts = name.split("-")
    for end in range(len(parts), 0, -1):
        candidate = "-".join(parts[:end])
        if (end > 1 or len(candidate) >= 4) and any(holds(t, candidate) for t in texts):
            return candidate
    return name


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
    specifics: list[str] = field(default_factory=list)  # numbers and names it adds to the question

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ------------------------------------------------------------------ the check


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
        (SEED-GRPO is not DRA-GRPO); a name no paper and no question holds is invented; a claim in
        another language is also scored by its names and numbers found in the paper (`anchors`). A
        claim keeps the citations the model wrote when one of them supports it; otherwise the
        best-supporting numbered paper replaces them (``answer.attribute``); else it is unsupported.
        With a ``judge`` (the model asked whether the paper states the claim: entailment, not
        overlap), a claim is supported only by a paper the judge confirms, and re-attributed only to one.
        """
        threshold = self.settings.support_threshold
        english = is_english(given.split("\n")[0])
        titles = {n: paper.title for n, paper in by_number.items()}
        texts = {n: evidence_text(paper.title, paper.abstract).lower() for n, paper in by_number.items()}
        given_names = {form for a in anchors(given) for form in (a, held_form(a, texts.values()))}
        stated: dict[int, dict[str, set[str]]] = {}  # each paper's number roles, once a claim adds a number
        named: set[int] = set()  # papers whose title the answer already gave
        which = asks_for_papers(given.split("\n")[0])

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
            claimed = claimed_roles(claim) if numbers else {}
            best: dict[int, tuple[float, str]] = {}
            for n, paper in by_number.items():
                if n in written or self.settings.attribute:
                    paper_sentences = sentences_of(paper.abstract) or [paper.title]
                    if names_title(claim, paper.title):  # "It is called DenseNets Reloaded [1]."
                        paper_sentences = [paper.title, *paper_sentences]
                    scores = self.support_scores([claim], paper_sentences, added=[added or {""}])[0]
                    if names and not (english and is_english(claim)):
                        scores = np.maximum(scores, [len(names & anchors(ps)) / len(names) for ps in paper_sentences])
                    if numbers:  # a number the paper does not state, or states of something else
                        if n not in stated:
                            stated[n] = number_roles(texts[n])
                        scores = scores * numbers_held(numbers, claimed, stated[n])
                    # a name this paper lacks that another numbered paper holds, and no other cited one
                    foreign = any(not holds(texts[n], a) and any(holds(texts[m], a) for m in texts if m != n)
                                  and not any(holds(texts[w], a) for w in written if w != n) for a in names)
                    if foreign or invented:  # about another numbered paper, or naming what none holds
                        scores = scores * 0.0
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
                                       entailed=entailed, specifics=sorted(specifics(sentence, given))),
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
