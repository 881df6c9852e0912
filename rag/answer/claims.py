"""What an answer sentence claims: its sentences and citation markers, the words it adds to the
question (stemmed), the numbers it states and the words beside them (their roles), the names it
gives (`anchors`), and whether an abstract's text holds a number or name (`holds`).

Left out: which paper supports a sentence, and the scores (`rag.answer.support`); what kind of question
was asked and naming papers in an answer (`rag.answer.question_kinds`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from rag.answer import prompts
from rag.answer.language import is_english
from rag.index.chunking import split_sentences
from rag.index.lexical import bm25s_module, stemmer

# a citation marker: "[1]", "[2, 3]", "[1-4]", "[source 2]"; group 1 holds the numbers
CITATION_MARKER = re.compile(r"\[(?:(?:source|paper|ref)\s*)?(\d+(?:\s*(?:[,;]|[-–])\s*\d+)*)\]", re.I)
_WORD = re.compile(r"[a-z0-9]+(?:[-.][a-z0-9]+)*")


# ------------------------------------------------------------------ words


def _stopwords() -> frozenset[str]:
    return frozenset(bm25s_module().stopwords.STOPWORDS_EN)  # bm25s without numba (`rag.index.lexical.bm25s_module`)


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


def specifics(text: str, given: str) -> set[str]:
    """The numbers and names ``text`` states that ``given`` (what the user asked) did not hold.

    >>> sorted(specifics("Skywork-MoE has 16 experts and CoNLL03 scores [1].", "How many experts has Skywork-MoE?"))
    ['16', 'conll03']
    """
    names = {a for a in anchors(text) if not a.replace(".", "").isdigit()}
    return (numbers_in(text) - numbers_in(given)) | (names - anchors(given))


_NUMBER_WORDS = re.compile(r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
                           r"fifty|hundred|thousand|million|billion|trillion|twice|thrice|half|double|triple|"
                           r"quadruple|dozens?)\b", re.I)


def states_a_value(text: str, given: str) -> bool:
    """Whether ``text`` states a value ``given`` (the question) did not: a number, a name holding a digit
    ("15B", "AIME24"), or a number word ("three times faster").

    >>> states_a_value("ZQRT runs three times faster than dense attention [1].", "How much faster is ZQRT?")
    True
    >>> states_a_value("It achieves state-of-the-art accuracy on AIME 2024 [1].", "What accuracy on AIME 2024?")
    False
    """
    return any(any(c.isdigit() for c in value) for value in specifics(text, given)) \
        or bool(_NUMBER_WORDS.search(strip_citations(text)))


def holds(text: str, name: str) -> bool:
    """Whether lower-cased ``text`` holds ``name`` as a whole token.

    >>> holds("we train seed-grpo on math", "seed-grpo"), holds("we train seed-grpo", "grpo")
    (True, False)
    >>> holds("qwen2.5-7b-instruct", "qwen2.5-7b")
    True
    """
    return re.search(rf"(?<![\w-]){re.escape(name)}(?!\w)", text) is not None


def mentions(text: str, name: str) -> bool:
    """Whether lower-cased ``text`` holds ``name`` as a token, or as a token's start before a digit or a
    hyphen ("AIME" in "aime24", "Llama" in "llama-3").

    >>> mentions("aime24 56.7", "aime"), mentions("we aimed", "aime")
    (True, False)
    """
    return holds(text, name) or re.search(rf"(?<![\w-]){re.escape(name)}[\d-]", text) is not None


def spells_out(text: str, acronym: str) -> bool:
    """Whether lower-cased ``text`` holds words whose initials spell ``acronym`` (a plural "s" aside).

    >>> spells_out("we use reinforcement learning with large language models", "rl"), \\
    ...     spells_out("large language models", "llms"), spells_out("weight interpolation", "bcwi")
    (True, True, False)
    """
    letters = acronym[:-1] if acronym.endswith("s") and len(acronym) > 2 else acronym
    return re.search(r"\b" + r"\w*[\s-]+".join(re.escape(c) for c in letters) + r"\w*", text) is not None


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
