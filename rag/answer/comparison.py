"""A question that compares papers ("How do CoTTA and PSMT each ...", "Compare X with Y"), and the
line that gives a compared paper its own say when the answer left it out.

The search ranks the two papers a comparison names first (8 of holdout-dev's 10 comparisons), but
the bundled 1.5B model often writes about one of them only (pair cited 0.33 on the holdout
sample). So each of the first two papers the answer read that the answer does not cite, and that
scores at least ``MIN_SHARE`` of the best paper, gets one line: its short title and the sentence
of its abstract nearest the question, quoted and cited.

Left out: which sentence is nearest (`rag.answer.answer_quotes.Quotes.ranked_sentences`); comparisons of more
than two papers (a list: `rag.answer.listing`).
"""

from __future__ import annotations

import re

from rag.answer.question_kinds import title_name

_COMPARES = re.compile(r"\b(?:each|both|compare[sd]?|comparing|comparison|differ(?:s|ence|ences)?|versus|vs\.?)\b",
                       re.IGNORECASE)  # English: a question in another language is asked of its translation
COMPARED = 2  # papers a comparison covers ...
MIN_SHARE = 0.45  # ... when they score at least this share of the best paper (the second compared paper
# scored 0.46-0.99 of the first on holdout-dev; a question about one paper drops further)


def compares(question: str) -> bool:
    """Whether the question asks how papers compare.

    >>> compares("How do CoTTA and PSMT each prevent forgetting?"), compares("Compare RAdam with Adam.")
    (True, True)
    >>> compares("What does RAdam rectify?"), compares("How do Bone and HRA differ?")
    (False, True)
    """
    return bool(_COMPARES.search(question))


def short_title(title: str, longest: int = 40) -> str:
    """A paper's name for a line of its own: the part of its title before a colon when that is short.

    >>> short_title("Skywork-MoE: A Deep Dive into Training Techniques"), short_title("Dice Loss for NLP")
    ('Skywork-MoE', 'Dice Loss for NLP')
    """
    name = title_name(title)
    return name if name is not None and len(name) <= longest else title


def line(number: int, title: str, sentence: str) -> str:
    """The line a compared paper gets: its short title and quoted sentence, cited.

    >>> line(2, "PSMT: Plasticity and Stability", "We propose PSMT.")
    'PSMT: \u201cWe propose PSMT.\u201d [2]'
    """
    return f"{short_title(title)}: \u201c{sentence.rstrip()}\u201d [{number}]"
