"""Optional LLM-judged metrics: faithfulness and answer relevance through llama-index's
``FaithfulnessEvaluator`` and ``RelevancyEvaluator``.

A judge is named explicitly, never defaulted: ``ollama:MODEL`` (the configured
``llm.ollama_url``) or ``openai:MODEL@URL`` (an OpenAI-compatible server, e.g. a local
``python -m llama_cpp.server``; with no ``@URL``, the configured ``llm.openai_base_url``).
Reachability is checked once, up front, through ``rag.llm.make_backend(...).check()``;
the judge that answers is then wrapped as a llama-index LLM. When it is unreachable the
judge is skipped and the reason is kept as a note for summary.json and report.md.

Each answered question gets ``faithfulness`` (1.0 when the judge finds the answer
supported by the cited abstracts, or the retrieved ones when nothing was cited) and
``relevancy`` (1.0 when the answer, with those abstracts, responds to the question).
The evaluators run on one event loop of the judge's own (`Judge.loop`), never on whatever loop
the process has: llama-index's sync ``evaluate`` runs each call on the thread's current loop or a
fresh ``asyncio.run`` loop, and its LLM keeps an async client bound to the first loop it used, so
once anything in the process had called ``asyncio.run`` (an MCP client, say) the second
evaluation failed with "Detected nested async".

Left out: abstentions (nothing to judge), retries, and any remote default.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from rag.errors import InputError

NO_JUDGE = "skipped: no judge configured (pass --judge ollama:MODEL or --judge openai:MODEL@URL)"


@dataclass(frozen=True)
class JudgeSpec:
    provider: str           # "ollama" | "openai"
    model: str
    url: str | None = None

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}" + (f"@{self.url}" if self.url else "")


def parse_judge(spec: str) -> JudgeSpec:
    """``ollama:MODEL`` or ``openai:MODEL@URL``.

    >>> parse_judge("openai:local@http://127.0.0.1:8080/v1")
    JudgeSpec(provider='openai', model='local', url='http://127.0.0.1:8080/v1')
    """
    provider, _, rest = spec.partition(":")
    model, _, url = rest.partition("@")
    if provider not in ("ollama", "openai") or not model:
        raise InputError(f"--judge {spec!r} is not PROVIDER:MODEL", "use ollama:MODEL or openai:MODEL@URL")
    return JudgeSpec(provider, model, url or None)


def _llm_settings(spec: JudgeSpec, settings: Any) -> Any:
    update: dict[str, Any] = {"backend": spec.provider, "model": spec.model}
    if spec.url:
        update["ollama_url" if spec.provider == "ollama" else "openai_base_url"] = spec.url
    return settings.llm.model_copy(update=update)


def check_reachable(spec: JudgeSpec, settings: Any) -> str | None:
    """None when the judge answers; else one line saying why not (the narrow use of rag.llm)."""
    from rag.errors import BackendError
    from rag.llm import make_backend

    try:
        make_backend(spec.provider, _llm_settings(spec, settings)).check()
    except BackendError as err:
        return f"judge {spec} unreachable: {err}" + (f" ({err.fix})" if err.fix else "")
    return None


class Judge:
    """Faithfulness and relevancy of one answer, judged by a llama-index LLM."""

    def __init__(self, spec: JudgeSpec, settings: Any, llm: Any | None = None) -> None:
        from llama_index.core.evaluation import FaithfulnessEvaluator, RelevancyEvaluator

        self.spec = spec
        self.llm = llm or self._make_llm(spec, _llm_settings(spec, settings))
        self.faithfulness = FaithfulnessEvaluator(llm=self.llm)
        self.relevancy = RelevancyEvaluator(llm=self.llm)
        self.loop = asyncio.new_event_loop()  # the one loop the LLM's async client is bound to
        self._lock = threading.Lock()  # a loop runs one call at a time; eval workers share the judge

    @staticmethod
    def _make_llm(spec: JudgeSpec, llm: Any) -> Any:
        if spec.provider == "ollama":
            from llama_index.llms.ollama import Ollama

            return Ollama(model=llm.model, base_url=llm.ollama_url, temperature=0.0, context_window=llm.num_ctx,
                          request_timeout=llm.timeout_s, additional_kwargs={"num_ctx": llm.num_ctx})
        from llama_index.llms.openai_like import OpenAILike

        return OpenAILike(model=llm.model, api_base=llm.openai_base_url, api_key=llm.openai_api_key,
                          is_chat_model=True, temperature=0.0, context_window=llm.context_window,
                          timeout=llm.timeout_s, max_retries=0)

    def score(self, question: str, answer: dict[str, Any]) -> dict[str, Any]:
        """{"faithfulness", "relevancy"} in {0.0, 1.0}; None for an abstention; "judge_error" on failure."""
        if answer.get("abstained"):
            return {"faithfulness": None, "relevancy": None}
        sources = answer.get("citations") or answer.get("also_retrieved") or []
        contexts = [f"{c['title']}\n{c['abstract']}" for c in sources] or ["(no sources)"]
        text = answer.get("answer") or ""
        async def both() -> tuple[Any, Any]:
            return (await self.faithfulness.aevaluate(query=question, response=text, contexts=contexts),
                    await self.relevancy.aevaluate(query=question, response=text, contexts=contexts))

        try:
            with self._lock:
                faithful, relevant = self.loop.run_until_complete(both())
        except Exception as err:  # noqa: BLE001 - a judge failure must not lose the answer
            return {"faithfulness": None, "relevancy": None, "judge_error": f"{type(err).__name__}: {err}"[:300]}
        return {"faithfulness": float(bool(faithful.passing)), "relevancy": float(bool(relevant.passing))}


def make_judge(spec: str | None, settings: Any) -> tuple[Judge | None, str | None]:
    """(judge, None), or (None, a note starting "skipped:" that says why: no judge given, or unreachable)."""
    if not spec:
        return None, NO_JUDGE
    parsed = parse_judge(spec)
    why = check_reachable(parsed, settings)
    if why:
        return None, f"skipped: {why}"
    return Judge(parsed, settings), None


__all__ = ["NO_JUDGE", "Judge", "JudgeSpec", "check_reachable", "make_judge", "parse_judge"]
