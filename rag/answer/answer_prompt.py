"""The prompt an answer reads: each paper's text within the backend's budget (its evidence
sentences, or its whole abstract), fenced with the request's delimiter, then the question and the
one instruction that differs (the answerability check's, the answer's, a list's).

Left out: the templates themselves (`rag.answer.prompts`), which sentences are evidence (`rag.answer.evidence`),
when the whole abstracts are read (`rag.answer.answerer.Answerer.stream` widens on a "no"), talking to the
model (`rag.backends`).
"""

from __future__ import annotations

from collections.abc import Sequence

from rag.answer import evidence, language, prompts
from rag.answer.support import SupportChecker
from rag.index.chunking import chunk_index
from rag.llm import Backend, Message
from rag.search.retrieval import PaperHit
from rag.settings import AnswerSettings


class AnswerPrompt:
    """Builds the prompts of one answerer (its settings, its sentence scorer)."""

    def __init__(self, settings: AnswerSettings, support: SupportChecker) -> None:
        self.settings, self.support = settings, support

    @staticmethod
    def instruction(listing: bool, lang: str) -> str:
        """The answer's final instruction: a list for "which papers", in the question's language."""
        text = prompts.LIST_INSTRUCTION if listing else prompts.ANSWER_INSTRUCTION
        return text + (prompts.LANGUAGE_INSTRUCTION.format(language=language.name(lang))
                       if lang != language.ENGLISH else "")

    def sources(self, query: str, prompted: list[tuple[int, PaperHit]], llm: Backend, question: str,
                history: Sequence[Message] = (), listing: bool = False,
                whole: bool = False) -> list[tuple[int, PaperHit, str]]:
        """The text each prompted paper brings, best papers first, within the backend's prompt budget:
        with ``answer.evidence`` ``sentences`` (the default) the sentences that best match the query
        (`rag.answer.evidence`, ``answer.evidence_tokens``; a list question's papers share
        ``answer.list_evidence_tokens``), with ``abstracts`` (or ``whole``) each whole abstract (its best
        chunks when long), cut at a sentence end. A paper that gets no text stays out of the prompt."""
        cfg = self.settings
        longest = max(prompts.ANSWER_INSTRUCTION, prompts.LIST_INSTRUCTION, prompts.CHECK_INSTRUCTION, key=len)
        budget = llm.prompt_budget - llm.count_tokens(prompts.SYSTEM_PROMPT) - llm.count_tokens(question) \
            - llm.count_tokens(longest) - 60 - sum(llm.count_tokens(m.content) for m in history)
        header = {n: llm.count_tokens(self.block(n, hit, "SOURCE-0000abcd", "")) for n, hit in prompted}
        if cfg.evidence == "sentences" and not whole:
            room = min(budget, cfg.list_evidence_tokens if listing else cfg.evidence_tokens)
            texts = evidence.select(query, [hit.paper.abstract for _, hit in prompted],
                                    lambda q, sentences: self.support.support_scores([q], sentences)[0],
                                    llm.count_tokens, room, [header[n] for n, _ in prompted])
            return [(n, hit, text) for (n, hit), text in zip(prompted, texts) if text]
        out = []
        for number, hit in prompted:
            sentences = evidence.sentences_of(self.source_text(hit))
            while sentences and (cost := header[number] + llm.count_tokens(" ".join(sentences))) > budget:
                sentences.pop()  # drop whole sentences from the end, never cut one
            if not sentences:
                break
            out.append((number, hit, " ".join(sentences)))
            budget -= cost
        return out

    def widened(self, sources: list[tuple[int, PaperHit, str]], llm: Backend, question: str,
                history: Sequence[Message], listing: bool) -> list[tuple[int, PaperHit, str]] | None:
        """The whole abstracts of the papers ``sources`` excerpted, when ``answer.widen`` is on and they
        say more than the excerpts; None otherwise (nothing new to read before abstaining). A
        paraphrased or translated question often scores the sentence that answers it below others,
        so an excerpt can lack it while the abstract has it (dev: 5 of 81 answerable questions)."""
        if not self.settings.widen or self.settings.evidence != "sentences":
            return None
        wider = self.sources(question, [(n, hit) for n, hit, _ in sources], llm, question, history, listing,
                             whole=True)
        return wider if [t for *_, t in wider] != [t for *_, t in sources] else None

    @staticmethod
    def block(number: int, hit: PaperHit, delimiter: str, text: str) -> str:
        return prompts.SOURCE_TEMPLATE.format(number=number, title=hit.paper.title, delimiter=delimiter, text=text,
                                              year=f" ({hit.paper.year})" if hit.paper.year else "")

    def parts(self, question: str, sources: list[tuple[int, PaperHit, str]], history: Sequence[Message] = (),
                     delimiter: str = "SOURCE") -> tuple[list[Message], str]:
        """(system + bounded history, the user message without its final instruction): the sources
        (`sources`) fenced with ``delimiter``, then the question."""
        blocks = [self.block(n, hit, delimiter, text) for n, hit, text in sources]
        # the instruction goes last, appended by `messages_for` (never substituted into text that
        # holds abstracts, which may contain anything, "{instruction}" included)
        user = prompts.USER_TEMPLATE.format(sources="\n\n".join(blocks), question=question, delimiter=delimiter,
                                            instruction="")
        return [Message("system", prompts.SYSTEM_PROMPT), *history], user

    @staticmethod
    def messages_for(parts: tuple[list[Message], str], instruction: str) -> list[Message]:
        """The prompt parts with their final instruction: the check's or the answer's."""
        head, user = parts
        return [*head, Message("user", user + instruction)]

    def source_text(self, hit: PaperHit) -> str:
        """The paper's best chunks in abstract order (the whole abstract when it is short)."""
        if len(hit.paper.abstract) < 1200 or not hit.chunks:
            return hit.paper.abstract
        order = sorted(hit.chunks, key=lambda c: chunk_index(c.chunk_id))
        return " ".join(c.text for c in order)
