"""The answer to a "which papers ..." question, made from the search: the papers it ranks close to
the best one, closest first, each quoted by the sentence of its abstract nearest the question.

Why the search and not the model: on the holdout lists the bundled 1.5B model, given twelve
papers' evidence (~700 prompt tokens, ~25 s on two cores), named one or two of the three to nine
papers the search had found, or abstained (list recall 0.23). The search, asked for the list's
topic (`topic`: "mixture-of-experts models", not "Which papers use ..."), keeps a paper that
scores at least ``answer.list_min_score`` (0.2) of the best one's fused score and whose title or
one abstract sentence scores at least ``answer.list_min_support`` (0.35) against the topic: on
holdout-dev's ten lists that recalls 0.84 of the gold papers at precision 0.73 (the score cut
alone, at 0.3 on the whole question: 0.85 at 0.60). Every line is a quotation, so nothing in it
can be invented, and it is written before a model would have read its prompt.
``answer.lists = "model"`` keeps the model-written list for comparison (`eval/README.md`).

Left out: telling a list question from another (`rag.answer.question_kinds.lists_papers`), the search, the
choice of each paper's sentence (`rag.answer.answer_quotes.Quotes.ranked_sentences`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

from rag.answer import language

T = TypeVar("T")

# what the list says first, in each answer language: how many papers it shows and what each line is
LEADS: dict[str, str] = {
    "en": "{count} papers match this best, closest first, each with the sentence of its abstract nearest the question:",
    "de": "{count} Arbeiten passen am besten, die nächste zuerst, jede mit dem Satz ihres Abstracts, der der Frage "
          "am nächsten ist:",
    "fr": "{count} articles correspondent le mieux, le plus proche d'abord, chacun avec la phrase de son résumé la "
          "plus proche de la question :",
    "es": "{count} artículos encajan mejor, el más cercano primero, cada uno con la frase de su resumen más cercana "
          "a la pregunta:",
    "it": "{count} articoli corrispondono meglio, il più vicino per primo, ciascuno con la frase del suo abstract più "
          "vicina alla domanda:",
    "pt": "{count} artigos correspondem melhor, o mais próximo primeiro, cada um com a frase do seu resumo mais "
          "próxima da pergunta:",
    "nl": "{count} artikelen passen het best, de dichtstbijzijnde eerst, elk met de zin uit de samenvatting die het "
          "dichtst bij de vraag ligt:",
    "ru": "{count} статей подходят лучше всего, ближайшая первой, каждая с предложением из аннотации, ближайшим к "
          "вопросу:",
    "zh": "最相关的 {count} 篇论文（按相关度排序），每篇附上其摘要中与问题最接近的一句：",
    "ja": "最も関連する {count} 本の論文（関連度順）と、それぞれの要旨で質問に最も近い一文：",
    "ko": "가장 관련된 논문 {count}편(관련도 순)과 각 초록에서 질문에 가장 가까운 문장:",
}


_FRAME = re.compile(r"^\s*(?:which|what)\s+(?:papers|works|studies|articles|publications)\s+(?:are\s+)?(?:about\s+)?",
                    re.IGNORECASE)


def topic(question: str) -> str:
    """What a list question asks about: the question without its "Which papers (are about)" frame,
    which only adds noise to a search and to sentence scores.

    >>> topic("Which papers are about few-shot learning?"), topic("Which papers use or build MoE models?")
    ('few-shot learning?', 'use or build MoE models?')
    >>> topic("Compare RAdam and Adam")
    'Compare RAdam and Adam'
    """
    return _FRAME.sub("", question) or question


def listed(scored: Sequence[tuple[T, float]], min_score: float, limit: int) -> list[T]:
    """The items whose score is at least ``min_score`` of the best one, at most ``limit``, in order.

    >>> listed([("a", 2.0), ("b", 1.0), ("c", 0.5), ("d", 0.9)], 0.45, 10)
    ['a', 'b', 'd']
    >>> listed([("a", 2.0), ("b", 1.0)], 0.3, 1), listed([], 0.3, 5)
    (['a'], [])
    """
    top = max((score for _, score in scored), default=0.0)
    return [item for item, score in scored if top > 0 and score >= min_score * top][:limit]


def lead(count: int, lang: str) -> str:
    """The list's first line, in the answer's language (English where there is no translation).

    >>> lead(3, "en")
    '3 papers match this best, closest first, each with the sentence of its abstract nearest the question:'
    """
    return LEADS.get(lang, LEADS[language.ENGLISH]).format(count=count)


def line(number: int, title: str, sentence: str) -> str:
    """One paper of the list: its title, citation and quoted sentence.

    >>> line(2, "RAdam", "We propose RAdam.")
    '- RAdam [2]: \u201cWe propose RAdam.\u201d'
    """
    return f"- {title} [{number}]: \u201c{sentence.rstrip()}\u201d"
