"""What kind of question was asked (which paper, every paper, a thing or a value, how many of
something no abstract mentions) and how an answer sentence names the papers it cites (titles
written beside their markers).

Left out: what a sentence claims (`rag.answer.claims`), the support check that uses these (`rag.answer.support`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rag.answer.claims import anchors, content_words, stems

_HOW_MANY = re.compile(r"\bhow\s+many\s+([^\W\d_][\w-]*)", re.I)
_ASKS_FOR_PAPERS = re.compile(r"\b(?:which|what)\s+(?:\w+\s+)?(?:papers?|works?|stud(?:y|ies)|articles?|"
                              r"publications?)\b|\bis\s+there\s+(?:a|any)\s+(?:paper|work|study|research)\b", re.I)
# citation markers in the place of a noun: after a verb or preposition, or in a list of them
_NOUN_MARKERS = re.compile(r"(\b(?:is|are|was|were|in|of|by|see|from|and|or|called|titled|namely|papers?|works?|"
                           r"stud(?:y|ies))\s+)"
                           r"((?:\[\d+\](?:\s*,\s*(?:and\s+)?|\s+(?:and|or)\s+)?)+)", re.I)


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


def title_name(title: str) -> str | None:
    """The name a title gives its paper before a colon; None for a title without one.

    >>> title_name("Skywork-MoE: A Deep Dive into Training Techniques"), title_name("Dice Loss for NLP")
    ('Skywork-MoE', None)
    """
    head, colon, _ = title.partition(":")
    return head.strip() if colon else None


def names_paper(sentence: str, title: str) -> bool:
    """The sentence names the paper: by its title (`names_title`), or by the name its title gives
    before a colon (`title_name`: "Treasure Hunt: Real-time Targeting of the Long Tail ..."), one to
    four words.

    >>> names_paper("The Treasure Hunt paper uses markers [1].", "Treasure Hunt: Real-time Targeting of the Long Tail")
    True
    >>> names_paper("It hunts for treasure [1].", "Treasure Hunt: Real-time Targeting of the Long Tail")
    False
    """
    name = title_name(title)
    short = name is not None and 1 <= len(name.split()) <= 4 and \
        re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", sentence, re.I) is not None
    return short or names_title(sentence, title)


def asks_for_papers(question: str) -> bool:
    """The question asks which paper or papers (its answer is a title).

    >>> asks_for_papers("Which paper proposes SetFit?"), asks_for_papers("What does SetFit propose?")
    (True, False)
    """
    return bool(_ASKS_FOR_PAPERS.search(question))


# a preposition may come first ("For how many steps ...", "By how much ...", "On which benchmark ...")
_LEADING = r"^\W*(?:(?:for|in|by|to|at|up\s+to|over|after|with|within|on|from|across|under)\s+)?"
_ASKS_WHAT = re.compile(_LEADING + r"(?:what|which|who|when|where|"
                        r"how\s+(?:many|much|large|long|big|fast|does|do|did|is|are))\b", re.I)


def asks_for_content(question: str) -> bool:
    """The question asks for a thing, a value or a way, not a yes or no, and not which paper: an
    answer that only restates it has not answered it.

    >>> asks_for_content("What peak learning rate was optimal?"), asks_for_content("Is RAdam stable?")
    (True, False)
    >>> asks_for_content("Which paper proposes SetFit?"), asks_for_content("How many GPUs were used?")
    (False, True)
    >>> asks_for_content("For how many steps was it trained?"), asks_for_content("In which paper is SetFit?")
    (True, False)
    """
    return bool(_ASKS_WHAT.search(question)) and not asks_for_papers(question)


_ASKS_NUMBER = re.compile(_LEADING + r"(?:how\s+(?:many|much)\b|what\s+(?:[\w-]+\s+){0,3}?(?:accuracy|score|f1|rate|"
                          r"percentage|proportion|share|number|size|count|speed-?up|improvement|reduction|gain|error|"
                          r"perplexity|bleu|auroc|auc|cost|ratio|reach|(?:get|obtain|achieve|score)\s+on)\b)", re.I)


def asks_for_number(question: str) -> bool:
    """The question asks for a value ("What accuracy does SEED-GRPO reach on AIME 2024?", "How many
    experts ...?"): an answer that states no number has not answered it.

    >>> asks_for_number("What accuracy does SEED-GRPO reach on AIME 2024?"), asks_for_number("How much does it cost?")
    (True, True)
    >>> asks_for_number("What is the name of the dataset?"), asks_for_number("Which model did they use?")
    (False, False)
    >>> asks_for_number("What does it reach on MATH?"), asks_for_number("What does it achieve?")
    (True, False)
    >>> asks_for_number("For how many steps was it trained?"), asks_for_number("By how much does it beat PPO?")
    (True, True)
    """
    return bool(_ASKS_NUMBER.search(question))


# "What learning rate schedule does ...": the property a what/which question asks for, before its verb
_ASKED_PROPERTY = re.compile(r"^\W*(?:what|which)\s+((?:[\w-]+\s+){1,4}?)(?:does|do|did|is|are|was|were|has|have|"
                             r"had|can|could|would|will)\b", re.I)
# vague words, and kinds of thing whose answer names instances without the kind ("Which tasks was RAdam
# evaluated on?" -> "image classification, language modeling ...": the abstract never says "tasks")
_VAGUE_PROPERTY = frozenset(stems(["model", "method", "approach", "technique", "paper", "work", "kind", "type", "way",
                                   "one", "main", "key", "new", "specific", "exact", "other", "task", "dataset",
                                   "benchmark", "data", "domain", "language", "architecture", "setting",
                                   "application", "problem", "metric", "baseline", "experiment", "downstream"]))


def asked_property(question: str) -> set[str]:
    """The stemmed words of the property a what/which question asks for, before its verb; empty when it
    asks for none (or only a vague one: "What method does ...").

    >>> sorted(asked_property("What learning rate schedule does WiSE-FT use?")), asked_property("What is RAdam?")
    (['learn', 'rate', 'schedul'], set())
    >>> asked_property("Which tasks was it evaluated on?"), asked_property("Which benchmark datasets are used?")
    (set(), set())
    """
    m = _ASKED_PROPERTY.search(question)
    return stems(content_words(m.group(1))) - _VAGUE_PROPERTY if m else set()


def unmentioned_property(claim: str, asked: set[str], text: str) -> set[str]:
    """The ``asked`` property's words (`asked_property`) when ``claim`` states them and the paper's
    lower-cased ``text`` holds fewer than half of them: the claim asserts the asked property of its
    subject, and the paper never mentions that property. Empty otherwise (no property asked, a claim
    that does not state it, a paper that names it).

    >>> schedule = asked_property("What learning rate schedule does WiSE-FT use?")
    >>> sorted(unmentioned_property("WiSE-FT uses a learning rate schedule that improves accuracy [2].", schedule,
    ...                             "wise-ft improves accuracy"))
    ['learn', 'rate', 'schedul']
    >>> unmentioned_property("SNIPER was run on FastSpeech2 [1].", asked_property("What TTS model were the SNIPER "
    ...                      "experiments run on?"), "sniper ... text-to-speech (tts) ... fastspeech2")
    set()
    """
    if not asked or not asked & stems(content_words(claim)):
        return set()
    held = asked & stems(content_words(text))
    return asked if len(held) * 2 < len(asked) else set()


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
