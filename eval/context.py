"""What a prompt budget keeps of the answer, measured without generating: the other half of
choosing ``llm.llamacpp_prompt_tokens`` (`rag bench --only llm` measures the time half).

``context_sweep(dataset, settings, budgets)`` builds, for every answerable question of the
dataset (first turns of conversations, whose question stands alone), the prompt the answer step
would send at each budget (`rag.answer.answer_prompt.AnswerPrompt.parts`, the real tokenizer of the bundled
model when it is installed) and reports per budget: the median and p90 prompt tokens, the share
of questions whose prompt holds a gold paper (``gold_in_prompt``) and all of them
(``all_gold_in_prompt``: several-paper questions), and the share of questions
with expected strings whose prompt holds one of them (``answer_in_prompt``: an upper bound on
the expected-string match any model can reach). Left out: generation and timing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval.datasets import Dataset
from rag.llm import approx_tokens
from rag.settings import Settings


@dataclass
class Tokenizer:
    """Counts tokens like the backend will: the bundled model's vocabulary when installed."""

    name: str
    llama: Any = None

    @classmethod
    def for_settings(cls, settings: Settings) -> Tokenizer:
        from importlib.util import find_spec

        from rag import models

        bundled = models.BUNDLED.get(settings.llm.model or "") or models.best_installed()
        if bundled is None or find_spec("llama_cpp") is None:
            return cls("approximate (3.5 characters per token)")
        from llama_cpp import Llama

        path = bundled.gguf_path(settings.llm.model_dir)
        return cls(bundled.name, Llama(model_path=str(path), vocab_only=True, verbose=False))

    def count_tokens(self, text: str) -> int:
        if self.llama is None:
            return approx_tokens(text)
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))


@dataclass
class _Budgeted:
    """The slice of `rag.llm.Backend` that `AnswerPrompt.parts` uses, at a chosen budget."""

    tokenizer: Tokenizer
    prompt_budget: int

    def count_tokens(self, text: str) -> int:
        return self.tokenizer.count_tokens(text)


def context_sweep(dataset: Dataset, settings: Settings, budgets: Sequence[int],
                  tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """Per budget: prompt tokens (median, p90), gold paper and expected string in the prompt. The
    budget is ``answer.evidence_tokens`` with evidence sentences (the default), the backend's prompt
    budget with whole abstracts."""
    from rag.answer import prompts
    from rag.answer.answer_prompt import AnswerPrompt
    from rag.answer.answerer import Answerer

    tokenizer = tokenizer or Tokenizer.for_settings(settings)
    answerer = Answerer(settings)
    questions = [q for q in dataset.questions if q.gold and q.turn <= 1]
    papers = answerer.retriever.index().papers
    found = []
    for q in questions:
        hits = answerer.retriever.search(q.question, k=settings.answer.max_context_papers).hits
        found.append((q, answerer.in_prompt(answerer._number(hits, None))))
    rows = []
    for budget in budgets:
        # evidence sentences: the budget is answer.evidence_tokens; whole abstracts: the backend's prompt budget
        sentences = settings.answer.evidence == "sentences"
        at = Answerer(settings.model_copy(update={"answer": settings.answer.model_copy(
            update={"evidence_tokens": budget})}), retriever=answerer.retriever) if sentences else answerer
        backend = _Budgeted(tokenizer, 1_000_000 if sentences else budget)
        tokens, gold, every, answer = [], [], [], []
        for q, numbered in found:
            sources = at.prompt.sources(q.question, numbered, backend, q.question)  # type: ignore[arg-type]
            head, user = at.prompt.parts(q.question, sources)
            messages = AnswerPrompt.messages_for((head, user), prompts.ANSWER_INSTRUCTION)
            tokens.append(sum(tokenizer.count_tokens(m.content) for m in messages))
            held = [papers[g].title in user for g in q.gold or [] if g in papers]
            gold.append(any(held))
            every.append(all(held))
            if q.answers:
                answer.append(any(a.lower() in user.lower() for a in q.answers))
        rows.append({"budget": budget, "questions": len(found), "tokens_median": float(np.median(tokens)),
                     "tokens_p90": float(np.percentile(tokens, 90)),
                     "gold_in_prompt": round(float(np.mean(gold)), 4),
                     "all_gold_in_prompt": round(float(np.mean(every)), 4),
                     "answer_in_prompt": round(float(np.mean(answer)), 4) if answer else None})
    return {"tokenizer": tokenizer.name, "dataset": dataset.name, "budgets": rows}


__all__ = ["Tokenizer", "context_sweep"]
