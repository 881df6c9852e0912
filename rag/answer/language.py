"""The language a question is written in, and what paper-rag says in it.

An answer is written in the question's language (retrieval still runs on an English query, and
evidence stays in the abstract's language). A question is English when English function words
make up a tenth of its words (`is_english`, no model: fast and right for the short, name-heavy
questions researchers ask); otherwise py3langid (langid.py's model, shipped inside the package,
nothing downloaded) names the language among those a small model writes well. The fixed
abstention phrase has a translation for each of those languages, so an abstention in Spanish is
Spanish too; evaluation recognises any of them.

    >>> detect("How many parameters does Skywork-MoE have?"), detect("¿Cuántos parámetros tiene Skywork-MoE?")
    ('en', 'es')
    >>> detect("Skywork-MoE 有多少参数？"), detect("Skywork-MoEのパラメータ数は？")
    ('zh', 'ja')

Left out: translating the query (`rag.answer.answerer`), what the model is told (`rag.answer.prompts`).
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any

from rag.answer import prompts

ENGLISH = "en"

# the languages a question may be answered in: code -> (name in English, the abstention phrase, its context lead)
LANGUAGES: dict[str, tuple[str, str, str]] = {
    "en": ("English", prompts.ABSTAIN_PHRASE, "What they say about it:"),
    "de": ("German", "Die vorliegenden Arbeiten beantworten diese Frage nicht.", "Was sie dazu sagen:"),
    "fr": ("French", "Les articles fournis ne répondent pas à cette question.", "Ce qu'ils en disent :"),
    "es": ("Spanish", "Los artículos proporcionados no responden a esta pregunta.", "Lo que dicen al respecto:"),
    "it": ("Italian", "Gli articoli forniti non rispondono a questa domanda.", "Cosa dicono al riguardo:"),
    "pt": ("Portuguese", "Os artigos fornecidos não respondem a esta pergunta.", "O que dizem a respeito:"),
    "nl": ("Dutch", "De aangeleverde artikelen beantwoorden deze vraag niet.", "Wat ze erover zeggen:"),
    "ru": ("Russian", "Представленные статьи не отвечают на этот вопрос.", "Что в них об этом сказано:"),
    "zh": ("Chinese", "所提供的论文没有回答这个问题。", "论文中相关的内容："),
    "ja": ("Japanese", "提供された論文はこの質問に答えていません。", "論文に書かれている関連内容："),
    "ko": ("Korean", "제공된 논문은 이 질문에 답하지 않습니다.", "논문에서 관련하여 말하는 내용:"),
}
_CJK = re.compile(r"[\u3040-\u30ff]")  # kana: Japanese, whatever the kanji say
_HANGUL = re.compile(r"[\uac00-\ud7af]")
_HAN = re.compile(r"[\u3400-\u9fff]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_LOCK = threading.Lock()

# English function and question words: a question with none of them among its words is not English
_ENGLISH_WORDS = frozenset([
    "the", "a", "an", "of", "in", "on", "for", "to", "what", "which", "who", "how", "why", "when", "where",
    "does", "do", "did", "is", "are", "was", "were", "and", "or", "with", "by", "from", "that", "this",
    "these", "those", "many", "much", "it", "its", "can", "than", "between", "about", "any", "there",
])


def is_english(text: str) -> bool:
    """Whether a question reads as English (function words), so retrieval with an English embedder works.

    >>> is_english("How many parameters does Skywork-MoE have?"), is_english("Wie viele Parameter hat Skywork-MoE?")
    (True, False)
    >>> is_english("UNICE 论文一共收集了多少张 HDR 原始图像？")
    False
    """
    if _HAN.search(text) or _CJK.search(text) or _HANGUL.search(text) or _CYRILLIC.search(text) \
            or re.search(r"[\u0600-\u06ff]", text):
        return False
    words = re.findall(r"[^\W\d_]+", text.lower())
    if len(words) < 3:
        return True
    return sum(w in _ENGLISH_WORDS for w in words) / len(words) >= 0.1


@lru_cache(maxsize=1)
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(LANGUAGES))
    return identifier


def detect(text: str) -> str:
    """The question's language code, one of `LANGUAGES` (English when unsure)."""
    if is_english(text):
        return ENGLISH
    if _CJK.search(text):
        return "ja"
    if _HANGUL.search(text):
        return "ko"
    if _HAN.search(text):
        return "zh"
    # names and numbers read the same in every language: leave them out of the vote
    words = " ".join(w for w in text.split() if not re.search(r"\d|[A-Z].*[A-Z]", w))
    with _LOCK:  # py3langid's classifier keeps state between calls
        code, _ = _identifier().classify(words or text)
    return str(code) if code in LANGUAGES else ENGLISH


def name(code: str) -> str:
    """The language's English name, as the model is told: ``name("de") == "German"``."""
    return LANGUAGES.get(code, LANGUAGES[ENGLISH])[0]


def abstain_phrase(code: str) -> str:
    """The fixed abstention phrase in the question's language (English for any other)."""
    return LANGUAGES.get(code, LANGUAGES[ENGLISH])[1]


def context_lead(code: str) -> str:
    """What introduces the abstract sentence quoted after an abstention."""
    return LANGUAGES.get(code, LANGUAGES[ENGLISH])[2]


def is_abstention(text: str) -> bool:
    """The text starts with the abstention phrase, in any language paper-rag writes it.

    >>> is_abstention("Los artículos proporcionados no responden a esta pregunta. Lo que dicen ...")
    True
    >>> is_abstention("No.")
    False
    """
    return any(text.strip().startswith(phrase) for _, phrase, _ in LANGUAGES.values())


__all__ = ["ENGLISH", "LANGUAGES", "abstain_phrase", "context_lead", "detect", "is_abstention", "is_english", "name"]
