"""Grounded answers from an instruction model, with `rag.testing.ScriptedBackend` standing in for
it: leaked prompt text is removed, citations are re-attributed by the evidence check, the model's
own "not stated" ends in the abstention phrase, the answerability verdict gates generation, and
the terminal and Markdown exports mark unsupported sentences. A small real-model check (Qwen,
slow) closes the file."""

from __future__ import annotations

import json
import re

import pytest

from rag.answer import prompts
from rag.answer.answerer import WIDENED, Answerer
from rag.chat import Conversation
from rag.ingest.ingestor import Ingestor
from rag.render.markdown import marked_answer
from rag.settings import Settings
from rag.testing import ScriptedBackend

from .conftest import FIXTURES, run_cli
from .ollama_standin import OllamaStandIn

ZQRT = "ZQRT: Sparse Kernels for Attention"
KVLOG = "KVLOG: Logging Key-Value Caches"


@pytest.fixture
def index(embedder) -> Settings:  # type: ignore[no-untyped-def]
    settings = Settings(llm={"backend": "llamacpp"})
    Ingestor(settings, embedder=embedder).run([FIXTURES / "hybrid.jsonl"])
    return settings


def ask(settings: Settings, embedder, backend: ScriptedBackend, question: str, **kw):  # type: ignore[no-untyped-def]
    return Answerer(settings, embedder=embedder, backend=backend).ask(question, **kw)


def number_of(answer, title: str) -> int:  # type: ignore[no-untyped-def]
    """The citation number the answer gave the paper called ``title``."""
    return next(c.number for c in [*answer.citations, *answer.also_retrieved] if c.paper.title == title)


def test_a_leaked_fence_and_prompt_text_never_reach_the_answer(index, embedder) -> None:  # type: ignore[no-untyped-def]
    reply = ("ZQRT runs three times faster than dense attention [1]. <<<SOURCE-1a2b3c4d Question: How much "
             "faster is ZQRT? Source: [n] End each sentence with the number of the abstract.")
    answer = ask(index, embedder, ScriptedBackend(reply), "How much faster is ZQRT than dense attention?")
    for leaked in ("<<<", "SOURCE-", "Question:", "[n]", "End each sentence"):
        assert leaked not in answer.answer
    assert answer.answer == "ZQRT runs three times faster than dense attention [1]."
    assert answer.removed and all(s.supported for s in answer.sentences)


def test_a_wrong_or_missing_citation_is_reattributed_to_the_supporting_paper(index, embedder) -> None:  # type: ignore[no-untyped-def]
    def reply(messages):  # type: ignore[no-untyped-def]
        user = messages[-1].content
        kv = user[user.index(KVLOG) - 3]  # the number the prompt gave KVLOG: "[n] KVLOG..."
        return f"ZQRT runs three times faster than dense attention [{kv}]. KVLOG records key-value cache states."

    answer = ask(index, embedder, ScriptedBackend(reply), "How much faster is ZQRT, and what does KVLOG record?")
    zqrt, kvlog = number_of(answer, ZQRT), number_of(answer, KVLOG)
    first, second = answer.sentences
    assert first.citations == [zqrt] and first.attributed and first.supported
    assert second.citations == [kvlog] and second.attributed and second.supported
    assert f"dense attention [{zqrt}]." in answer.answer and f"cache states [{kvlog}]." in answer.answer
    assert {c.paper.title for c in answer.citations} == {ZQRT, KVLOG}
    assert all(c.evidence for c in answer.citations)


def test_an_unsupported_claim_is_flagged_and_one_with_an_invented_number_withheld(index, embedder) -> None:  # type: ignore[no-untyped-def]
    reply = ("ZQRT runs three times faster than dense attention [1]. It was praised for its elegance by reviewers "
             "[1]. It was trained on 4,096 GPUs in Antarctica [1].")
    answer = ask(index, embedder, ScriptedBackend(reply), "How much faster is ZQRT than dense attention?")
    assert [s.supported for s in answer.sentences] == [True, False]
    assert marked_answer(answer).endswith("reviewers [1]. [unsupported]")
    assert "\u26a0 *unsupported*" in marked_answer(answer, "markdown")
    assert "4,096" not in answer.answer and answer.withheld == ["It was trained on 4,096 GPUs in Antarctica [1]."]


def test_the_models_own_not_stated_is_an_abstention(index, embedder) -> None:  # type: ignore[no-untyped-def]
    reply = "The abstracts do not mention which GPUs trained ZQRT [1]."
    answer = ask(index, embedder, ScriptedBackend(reply), "Which GPUs were used to build ZQRT?")
    assert answer.abstained and answer.answer.startswith(prompts.ABSTAIN_PHRASE)
    assert "model said" in (answer.abstain_reason or "") and answer.also_retrieved
    (said,) = answer.citations  # what the abstracts do say about ZQRT, quoted and cited
    assert said.paper.title == ZQRT and f"\u201c{said.evidence[0].sentence}\u201d" in answer.answer


def test_an_abstention_quotes_the_paper_the_question_names_not_one_its_query_made_up(index, embedder) -> None:  # type: ignore[no-untyped-def]
    # a German question's query is the model's English rendering, which may name another paper
    # (holdout-test m004: the SKILL-MIX study's question quoted Skywork-MoE)
    answerer = Answerer(index, embedder=embedder, backend=ScriptedBackend(""))
    numbered = list(enumerate(answerer.retriever.search("ZQRT KVLOG key-value cache", k=5).hits, 1))
    query = "KVLOG records the key-value cache states of ZQRT's inference servers [1]."
    _, hit, sentence = answerer.quotes.closest_sentence(query, numbered, "Welche Zustände speichert ZQRT?")
    assert hit.paper.title == ZQRT and sentence in hit.paper.abstract
    _, hit, _ = answerer.quotes.closest_sentence(query, numbered, "Und was speichert es?")  # names nothing
    assert hit.paper.title == KVLOG  # the query's names then say what the subject is


def test_counting_what_no_abstract_mentions_abstains_before_generating(index, embedder) -> None:  # type: ignore[no-untyped-def]
    backend = ScriptedBackend("ZQRT runs three times faster than dense attention [1].")
    answer = ask(index, embedder, backend, "How many GPUs were used to build ZQRT?")
    assert answer.abstained and answer.answer.startswith(prompts.ABSTAIN_PHRASE) and backend.calls == []
    assert "GPUs" in (answer.abstain_reason or "")
    counted = ScriptedBackend("ZQRT has 12 sparse kernels [1].")
    answer = ask(index, embedder, counted, "How many kernels does ZQRT provide?")  # "kernels" is in ZQRT's abstract
    assert "counts" not in (answer.abstain_reason or "") and counted.calls  # asked (then its "12" is withheld)


def test_a_first_sentence_saying_it_is_not_stated_abstains_despite_context(index, embedder) -> None:  # type: ignore[no-untyped-def]
    reply = ("The GPU count is not specified in the abstracts. ZQRT runs three times faster than dense "
             "attention [1].")
    answer = ask(index, embedder, ScriptedBackend(reply), "Which GPUs were used to build ZQRT?")
    assert answer.abstained and answer.answer.startswith(prompts.ABSTAIN_PHRASE)


def test_a_restatement_is_no_claim_and_a_bare_citation_gets_its_title(index, embedder) -> None:  # type: ignore[no-untyped-def]
    def reply(messages):  # type: ignore[no-untyped-def]
        user = messages[-1].content
        n = user[user.index(ZQRT) - 3]
        return f"Yes, there is a library of sparse kernels for attention. This is described in [{n}]."

    answer = ask(index, embedder, ScriptedBackend(reply), "Is there a library of sparse kernels for attention?")
    n = number_of(answer, ZQRT)
    assert not answer.abstained and [s.claim for s in answer.sentences] == [False, False]
    assert answer.answer.endswith(f"This is described in \u201c{ZQRT}\u201d [{n}].")
    assert marked_answer(answer) == answer.answer  # nothing flagged: neither sentence claims anything
    assert [c.paper.title for c in answer.citations] == [ZQRT]


def test_which_paper_is_answered_with_the_papers_title(index, embedder) -> None:  # type: ignore[no-untyped-def]
    def reply(messages):  # type: ignore[no-untyped-def]
        user = messages[-1].content
        return f"ZQRT [{user[user.index(ZQRT) - 3]}] speeds up attention on long sequences."

    answer = ask(index, embedder, ScriptedBackend(reply), "Which paper introduces the ZQRT kernels?")
    assert answer.answer.startswith(f"ZQRT (\u201c{ZQRT}\u201d) [{number_of(answer, ZQRT)}] speeds up")
    assert answer.sentences[0].supported and marked_answer(answer) == answer.answer
    plain = ask(index, embedder, ScriptedBackend(reply), "What does ZQRT speed up?")
    assert ZQRT not in plain.answer  # only a "which paper" question asks for the title

    def wrong(messages):  # type: ignore[no-untyped-def]
        user = messages[-1].content
        zqrt = user[user.index(ZQRT) - 3]
        other = next(n for n in re.findall(r"^\[(\d+)\] ", user, re.M) if n != zqrt)  # any other paper
        return f"ZQRT [{zqrt}] and RKV [{other}] both speed up attention on long sequences."

    every_paper = index.model_copy(update={"answer": index.answer.model_copy(
        update={"context_min_score": 0.0, "evidence": "abstracts", "lists": "model"})})  # every retrieved paper
    # in the prompt, and the model writes the list
    mixed = ask(every_paper, embedder, ScriptedBackend(wrong), "Which papers speed up attention on long sequences?")
    other = next(c for c in [*mixed.citations, *mixed.also_retrieved] if c.paper.title != ZQRT)
    assert ZQRT in mixed.answer and other.paper.title not in mixed.answer  # a citation that does not support it



def test_a_number_the_cited_paper_does_not_hold_is_unsupported(index, embedder) -> None:  # type: ignore[no-untyped-def]
    # every word but the number is in ZQRT's abstract: word overlap alone would call it supported
    reply = "ZQRT runs 7 times faster than dense attention [1]."
    answer = ask(index, embedder, ScriptedBackend(reply), "How much faster is ZQRT than dense attention?")
    assert answer.withheld == [reply] and "7 times" not in answer.answer
    assert answer.abstained  # its only claim was unsupported: the answer is that the abstracts do not say it


def test_a_wrong_extra_citation_is_dropped_when_another_supports_the_sentence(index, embedder) -> None:  # type: ignore[no-untyped-def]
    def reply(messages):  # type: ignore[no-untyped-def]
        user = messages[-1].content
        return (f"ZQRT runs three times faster than dense attention [{user[user.index(ZQRT) - 3]}]"
                f"[{user[user.index(KVLOG) - 3]}].")

    answer = ask(index, embedder, ScriptedBackend(reply), "How much faster is ZQRT, and what does KVLOG record?")
    assert answer.sentences[0].citations == [number_of(answer, ZQRT)] and answer.sentences[0].supported
    assert [c.paper.title for c in answer.citations] == [ZQRT]


def test_a_claim_in_another_language_is_checked_by_its_names_and_numbers(index, embedder) -> None:  # type: ignore[no-untyped-def]
    reply = "Le serveur KVLOG enregistre les états du cache clé-valeur."
    backend = ScriptedBackend(lambda m: "What does KVLOG record?" if "Translate" in m[-1].content else reply)
    answer = ask(index, embedder, backend, "Qu'est-ce que KVLOG enregistre ?")
    assert answer.sentences[0].supported and answer.sentences[0].citations == [number_of(answer, KVLOG)]


def test_papers_far_below_the_best_stay_out_of_the_prompt(index, embedder) -> None:  # type: ignore[no-untyped-def]
    backend = ScriptedBackend("ZQRT runs three times faster than dense attention [1].")
    answer = ask(index, embedder, backend, "How much faster is ZQRT than dense attention?")
    prompt = backend.calls[-1][1][-1].content
    top = max(h["score"] for h in answer.retrieved)
    for hit in answer.retrieved:
        assert (hit["title"] in prompt) == (hit["score"] >= 0.25 * top), hit
    assert any(hit["title"] not in prompt for hit in answer.retrieved)
    assert len(answer.citations) + len(answer.also_retrieved) == len(answer.retrieved)
    constrained = index.model_copy(update={"answer": index.answer.model_copy(update={"constrained": True})})
    ask(constrained, embedder, backend, "How much faster is ZQRT than dense attention?")
    in_prompt = [int(n) for n in re.findall(r"^\[(\d+)\] ", backend.calls[-1][1][-1].content, re.M)]
    assert backend.cited == in_prompt and len(in_prompt) < len(answer.retrieved)  # the grammar's numbers


def test_a_no_verdict_abstains_before_generating(index, embedder) -> None:  # type: ignore[no-untyped-def]
    backend = ScriptedBackend("ZQRT was trained on 512 GPUs [1].", verdict="no")
    answer = ask(index, embedder, backend, "Which GPUs were used to build ZQRT?")
    assert answer.abstained and answer.verdict == "no" and answer.answer.startswith(prompts.ABSTAIN_PHRASE)
    assert [kind for kind, _ in backend.calls] == ["choose"]  # never asked to write the answer
    check = backend.calls[0][1][-1].content
    assert check.endswith(prompts.CHECK_INSTRUCTION) and "ZQRT" in check


def test_flag_mode_records_the_verdict_and_answers(index, embedder) -> None:  # type: ignore[no-untyped-def]
    settings = index.model_copy(update={"answer": index.answer.model_copy(update={"verify": "flag"})})
    backend = ScriptedBackend("ZQRT runs three times faster than dense attention [1].",
                              verdict=lambda messages: "yes" if "Claim:" in messages[-1].content else "no")
    answer = ask(settings, embedder, backend, "How much faster is ZQRT than dense attention?")
    assert not answer.abstained and answer.verdict == "no"
    assert [k for k, _ in backend.calls] == ["choose", "stream", "choose"]  # the verdict, the answer, its claim


def test_a_model_that_cannot_follow_instructions_is_not_asked_for_a_verdict(index, embedder) -> None:  # type: ignore[no-untyped-def]
    backend = ScriptedBackend("ZQRT runs three times faster than dense attention [1].", capable=False)
    answer = ask(index, embedder, backend, "How much faster is ZQRT than dense attention?")
    assert answer.verdict is None and [k for k, _ in backend.calls] == ["stream"]


def test_the_same_question_gives_the_same_answer(index, embedder) -> None:  # type: ignore[no-untyped-def]
    backend = ScriptedBackend("ZQRT runs three times faster than dense attention [1].")
    answerer = Answerer(index, embedder=embedder, backend=backend)
    first, second = (answerer.ask("How much faster is ZQRT?") for _ in range(2))
    assert first.answer == second.answer and first.as_dict()["citations"] == second.as_dict()["citations"]
    prompts_sent = [m[-1].content for kind, m in backend.calls if kind == "stream"]
    strip = [p.split("<<<", 1)[0].split("marked", 1)[0] + p.split(">>>")[-1] for p in prompts_sent]
    assert strip[0] == strip[1]  # the prompt differs only in the per-request fence delimiter


def test_a_non_english_question_is_searched_in_english(index, embedder) -> None:  # type: ignore[no-untyped-def]
    def reply(messages):  # type: ignore[no-untyped-def]
        if "Translate this question" in messages[-1].content:
            return "Which library records key-value cache states of inference servers?"
        return "KVLOG zeichnet Key-Value-Cache-Zustände auf [1]."

    answer = ask(index, embedder, ScriptedBackend(reply), "Welche Bibliothek zeichnet die Zustände von "
                 "Schlüssel-Wert-Caches auf?")
    assert answer.query.startswith("Which library records") and answer.retrieved[0]["title"] == KVLOG


# ------------------------------------------------------------------ conversations


def test_a_question_naming_its_paper_is_not_rewritten_pronoun_or_not(bundled_copy, embedder) -> None:  # type: ignore[no-untyped-def]
    """The Skywork case: the second question says "it" but names Skywork-MoE."""
    conversation = Conversation(Answerer(Settings(llm={"backend": "extractive"}), embedder=embedder))
    conversation.ask("Which paper shows that entropy minimization alone improves LLM reasoning?")
    answer = conversation.ask("How many parameters and experts does Skywork-MoE have, and which training "
                              "techniques does it introduce?")
    assert conversation.turns[-1].condensed_by == "none"
    assert answer.query == answer.question
    assert answer.retrieved[0]["title"].startswith("Skywork-MoE")
    assert answer.citations and answer.citations[0].paper.title.startswith("Skywork-MoE")


def test_a_real_follow_up_is_condensed_by_a_capable_model(index, embedder) -> None:  # type: ignore[no-untyped-def]
    def reply(messages):  # type: ignore[no-untyped-def]
        text = messages[-1].content
        if "standalone search query" in text:
            return "KVLOG authors and publication date"
        return "KVLOG records key-value cache states of inference servers [1]."

    conversation = Conversation(Answerer(index, embedder=embedder, backend=ScriptedBackend(reply)))
    conversation.ask("Which library records key-value cache states of inference servers?")
    conversation.ask("Who wrote it?")
    assert conversation.turns[-1].condensed_by == "llm" and conversation.turns[-1].query.startswith("KVLOG")


def test_a_rewrite_that_only_echoes_the_follow_up_falls_back_to_the_rule(index, embedder) -> None:  # type: ignore[no-untyped-def]
    def reply(messages):  # type: ignore[no-untyped-def]
        if "standalone search query" in messages[-1].content:
            return "Who wrote it?"  # resolves nothing
        return "KVLOG records key-value cache states of inference servers [1]."

    conversation = Conversation(Answerer(index, embedder=embedder, backend=ScriptedBackend(reply)))
    conversation.ask("Which library records key-value cache states of inference servers?")
    answer = conversation.ask("Who wrote it?")
    assert conversation.turns[-1].condensed_by == "rules" and KVLOG in conversation.turns[-1].query
    assert answer.retrieved[0]["title"] == KVLOG


def test_citation_numbers_stay_small_and_stable_over_a_conversation(index, embedder) -> None:  # type: ignore[no-untyped-def]
    def reply(messages):  # type: ignore[no-untyped-def]
        user = messages[-1].content
        question = user.rsplit("Question: ", 1)[1]
        title = ZQRT if "ZQRT" in question else KVLOG if "KVLOG" in question else "PLNX Benchmark for Code Agents"
        number = user[user.index(title) - 3]
        return f"{title.split(':')[0].split()[0]} is described in this abstract [{number}]."

    conversation = Conversation(Answerer(index, embedder=embedder, backend=ScriptedBackend(reply)))
    numbers = []
    for question in ("What is ZQRT?", "What is KVLOG?", "What does the PLNX benchmark evaluate?", "What is ZQRT?"):
        answer = conversation.ask(question, k=4)
        numbers.append([c.number for c in answer.citations])
        assert max(c.number for c in [*answer.citations, *answer.also_retrieved]) <= 4 + len(conversation.numbers)
    assert numbers[0] == numbers[3]  # ZQRT keeps its number
    assert len({n[0] for n in numbers[:3]}) == 3  # and no two cited papers share one


# ------------------------------------------------------------------ interfaces show the same marks


def test_cli_ask_marks_an_unsupported_sentence(index) -> None:  # type: ignore[no-untyped-def]
    reply = "ZQRT runs three times faster than dense attention [1]. It was praised for its elegance by reviewers [1]."
    with OllamaStandIn(reply=reply) as server:
        env = {"RAG_LLM__BACKEND": "ollama", "RAG_LLM__OLLAMA_URL": server.url}
        result = run_cli("ask", "How much faster is ZQRT than dense attention?", env=env)
        assert result.returncode == 0, result.stderr
        assert "reviewers [1]. [unsupported]" in result.stdout
        assert "1 of 2 sentences not supported" in result.stdout
        data = json.loads(run_cli("ask", "--json", "How much faster is ZQRT than dense attention?", env=env).stdout)
    assert data["backend"] == "ollama" and data["model"] == "qwen2.5-coder:1.5b"
    assert [s["supported"] for s in data["sentences"]] == [True, False]


def test_cli_chat_reads_a_scripted_conversation_and_prints_json_lines(index) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("chat", "--backend", "extractive", "--json",
                     input="Which paper records key-value cache states?\nWho wrote it?\n")
    assert result.returncode == 0, result.stderr
    turns = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(turns) == 2 and all(t["citations"][0]["title"] == KVLOG for t in turns)
    assert turns[1]["query"] != turns[1]["question"]  # the follow-up was condensed


# ------------------------------------------------------------------ the bundled model for real (slow)


@pytest.mark.slow
def test_qwen_answers_a_factoid_with_the_right_paper_and_abstains_off_topic(bundled_copy, embedder) -> None:  # type: ignore[no-untyped-def]
    answerer = Answerer(Settings(), embedder=embedder)  # auto: no Ollama here, so the bundled Qwen
    answer = answerer.ask("How many parameters does Skywork-MoE have?")
    assert answer.backend == "llamacpp" and answer.model == "qwen2.5-coder-1.5b"
    assert "146" in answer.answer and not answer.abstained
    assert answer.citations[0].paper.title.startswith("Skywork-MoE") and answer.sentences[0].supported
    off = answerer.ask("What is the capital of France?")
    assert off.abstained and off.answer == prompts.ABSTAIN_PHRASE


@pytest.mark.slow
def test_the_ollama_path_answers_with_real_generations_behind_the_wire_format(bundled_copy, embedder) -> None:  # type: ignore[no-untyped-def]
    from .ollama_standin import llama_generator

    with OllamaStandIn(generate=llama_generator()) as server:
        settings = Settings(llm={"backend": "ollama", "ollama_url": server.url})
        answer = Answerer(settings, embedder=embedder).ask("How many parameters does Skywork-MoE have?")
        check, body, *claims = (r.body for r in server.chat_requests())
    assert answer.backend == "ollama" and answer.verdict == "yes"  # a JSON-schema `format`, enforced
    assert check["format"] == {"type": "string", "enum": ["yes", "Yes", "YES", "no", "No", "NO"]}
    assert body["options"]["num_ctx"] == 8192
    assert "146" in answer.answer and answer.citations[0].paper.title.startswith("Skywork-MoE")
    assert claims and all(c["format"] == check["format"] for c in claims)  # the entailment checks, one per claim


def test_cli_chat_says_each_note_once(index) -> None:  # type: ignore[no-untyped-def]
    with OllamaStandIn(reply="ZQRT runs three times faster than dense attention [1].") as server:
        env = {"RAG_LLM__BACKEND": "ollama", "RAG_LLM__OLLAMA_URL": server.url}
        result = run_cli("chat", input="How much faster is ZQRT?\nAnd than dense attention?\n", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("note: answering with Ollama model") == 1
    assert result.stdout.count("ZQRT runs three times faster") >= 2


def test_a_no_over_the_excerpts_reads_the_whole_abstracts_before_abstaining(index, embedder) -> None:  # type: ignore[no-untyped-def]
    # the budget holds one sentence of ZQRT's abstract; the verdict is "yes" only on the whole of it
    settings = index.model_copy(update={"answer": index.answer.model_copy(update={"evidence_tokens": 40})})
    whole = ("We introduce ZQRT, a library of sparse kernels that speeds up attention on long sequences. "
             "ZQRT runs three times faster than dense attention.")
    backend = ScriptedBackend("ZQRT is a library of sparse kernels that runs three times faster [1].",
                              verdict=lambda messages: "yes" if whole in messages[-1].content else "no")
    answer = ask(settings, embedder, backend, "How much faster is ZQRT than dense attention?")
    checks = [messages[-1].content for kind, messages in backend.calls if kind == "choose"]
    assert whole not in checks[0] and whole in checks[1]  # the excerpt first, then the abstract
    assert not answer.abstained and answer.verdict == "yes" and WIDENED in answer.notes
    assert whole in [messages for kind, messages in backend.calls if kind == "stream"][0][-1].content

    settings.answer.widen = False
    answer = ask(settings, embedder, backend, "How much faster is ZQRT than dense attention?")
    assert answer.abstained and WIDENED not in answer.notes
