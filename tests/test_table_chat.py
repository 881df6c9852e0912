"""A chat message that asks for a table gets the table (`rag.table.requests`, `rag.table.chat`), in
every chat interface: the web chat (its handler, as tests/test_ui.py calls it), ``rag ask`` and
``rag chat`` (subprocesses, extractive backend), and the API's chat completions (a running ``rag
api`` and the openai client). Questions, comparisons in prose included, are still answered.

The model is `rag.testing.ScriptedBackend` (tests/test_table.py's script) or the extractive backend:
no LLM is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.answer.answerer import Answerer
from rag.errors import InputError
from rag.ingest.ingestor import Ingestor
from rag.settings import Settings
from rag.table.chat import requested_table
from rag.table.maker import TableMaker
from rag.table.requests import TableRequest, table_request
from rag.testing import ScriptedBackend

from .conftest import FIXTURES, ROOT, run_cli
from .test_table import FLOW, MEMO, PRUNE, SCRIPT, ids, scripted

TABLE_ASKED = [  # message -> (query, papers, columns, earlier, k)
    ("make a table of test-time adaptation papers", ("test-time adaptation", (), (), False, None)),
    ("compare CoTTA, PSMT and RoTTA in a table", (None, ("CoTTA", "PSMT", "RoTTA"), (), False, None)),
    ("tabulate the methods and datasets of papers on test-time adaptation",
     ("test-time adaptation", (), ("method", "data"), False, None)),
    ("side by side comparison of CoTTA and PSMT", (None, ("CoTTA", "PSMT"), (), False, None)),
    ("Could you compare Skywork-MoE and PLaMo-100B in a table showing model size and data?",
     (None, ("Skywork-MoE", "PLaMo-100B"), ("model_size", "data"), False, None)),
    ("compare the accuracy of CoTTA and PSMT in a table", (None, ("CoTTA", "PSMT"), ("result",), False, None)),
    ("Make a table of 5 papers on pruning with their results and code", ("pruning", (), ("result", "code"), False, 5)),
    ("I'd like a table of diffusion model papers", ("diffusion model", (), (), False, None)),
    ("put them in a table", (None, (), (), True, None)),
    ("Compare RAdam with Adam.", (None, ("RAdam", "Adam"), (), False, None)),  # a bare "compare" of names only
    ("Compare 'Don't Stop Pretraining' and 'Reuse, Don't Retrain'",
     (None, ("Don't Stop Pretraining", "Reuse, Don't Retrain"), (), False, None)),
    ("compare title:ab12 and arxiv:2406.06563", (None, ("title:ab12", "arxiv:2406.06563"), (), False, None)),
]
ANSWERED = [  # questions: prose answers, comparisons too (rag.answer.comparison)
    "compare the accuracy of CoTTA and PSMT", "How do Bone and HRA differ?", "compare Adam and SGD on CIFAR",
    "Compare 'Don't Stop Pretraining' and 'Reuse, Don't Retrain': what does each recommend for continued pretraining?",
    "compare test-time adaptation methods", "compare CoTTA and Tent?", "What does Table 2 of the PLaMo paper show?",
    "Which results are in the table of Skywork-MoE?", "Which paper compares alignment methods like IPO and KTO?",
]


# ------------------------------------------------------------------ the request


@pytest.mark.parametrize(("message", "expected"), TABLE_ASKED)
def test_a_table_request_is_read_into_rows_and_columns(message: str, expected: tuple[object, ...]) -> None:
    assert table_request(message) == TableRequest(*expected)  # type: ignore[arg-type]


@pytest.mark.parametrize("message", ANSWERED)
def test_a_question_is_not_a_table_request(message: str) -> None:
    assert table_request(message) is None


def test_no_question_of_the_evaluation_sets_becomes_a_table() -> None:
    """Every comparison the answers are measured on keeps its prose answer."""
    questions = []
    for path in sorted((ROOT / "data" / "eval").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            questions += [record.get("question"), *(t["question"] for t in record.get("turns", []))]
    asked = [q for q in questions if q and table_request(q) is not None]
    assert len(questions) > 100 and asked == []


# ------------------------------------------------------------------ the table it asks for


@pytest.fixture
def indexed(embedder, rag_home: Path) -> Settings:  # type: ignore[no-untyped-def]
    """tests/test_table.py's three papers (FlowTTA, MemoTTA, a pruning paper), indexed at RAG_HOME."""
    settings = Settings(llm={"backend": "llamacpp"})
    Ingestor(settings, embedder=embedder).run([FIXTURES / "table.jsonl"])
    return settings


def maker(settings: Settings, embedder) -> TableMaker:  # type: ignore[no-untyped-def]
    return TableMaker(Answerer(settings, embedder=embedder, backend=ScriptedBackend(scripted(SCRIPT))))


def test_names_are_found_by_id_title_or_search_and_said(indexed: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    request = table_request(f"compare FlowTTA and '{PRUNE}' in a table by data and result")
    assert request is not None
    table = requested_table(maker(indexed, embedder), request)
    assert [r.paper.title for r in table.rows] == [FLOW, PRUNE]  # the search's best match; the exact title
    assert [c.key for c in table.columns] == ["data", "result"]
    assert table.notes[0] == f"\u201cFlowTTA\u201d: the best match is \u201c{FLOW}\u201d ({ids(indexed)[FLOW]})"
    assert table.rows[0].cells["data"].value == "ImageNet-C"

    nothing = table_request("compare Zorblax and Quuxformer in a table")
    with pytest.raises(InputError, match="no paper in the index matches Zorblax, Quuxformer") as err:
        requested_table(maker(indexed, embedder), nothing)  # type: ignore[arg-type]
    assert "make a table of" in (err.value.fix or "")
    with pytest.raises(InputError, match="no paper in the index is close to \u201cZorblax\u201d"):  # as answers abstain
        requested_table(maker(indexed, embedder), table_request("make a table of Zorblax papers"))  # type: ignore[arg-type]
    earlier = table_request("put them in a table")
    with pytest.raises(InputError, match="no earlier answer"):
        requested_table(maker(indexed, embedder), earlier)  # type: ignore[arg-type]
    cited = requested_table(maker(indexed, embedder), earlier, cited=[ids(indexed)[MEMO]])  # type: ignore[arg-type]
    assert [r.paper.title for r in cited.rows] == [MEMO]


# ------------------------------------------------------------------ the web chat


def test_web_chat_answers_a_table_request_with_the_table(indexed: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    from ui.app import WebApp
    from ui.state import Session

    backend = ScriptedBackend(scripted(SCRIPT))
    app = WebApp(indexed, embedder=embedder, backend=backend)
    outs = list(app.ask("make a table of test-time adaptation papers with their data and results", None, k=2))
    session: Session = outs[-1][-1]
    drawn = [o[0][-1]["content"] for o in outs if isinstance(o[0], list)]
    assert any("making the table: 1 of 2 rows" in html for html in drawn)  # rows stream in
    final = session.messages[-1]["content"]
    assert final.count("<tr data-paper") == 2 and "<th>Data</th><th>Result</th>" in final
    assert 'title="On ImageNet-C, FlowTTA reduces the error rate' in final  # evidence on hover, as in Compare
    assert "\u26a0 unsupported" in final and "7.9 mIoU" not in final  # MemoTTA's invented number is withheld
    assert 'class="overview"' in final and "<script" not in final
    assert {kind for kind, _ in backend.calls} == {"structured"}  # cells only: no answer was written
    assert app.slots.acquire(blocking=False)  # the slot is back
    app.slots.release()
    # the table is a turn of the tab's conversation: in its Markdown and BibTeX downloads
    [turn] = session.conversation.turns
    assert turn.kind == "table" and [c.paper.title for c in turn.answer.citations] == [FLOW, MEMO]
    md, bib = outs[-1][2], outs[-1][3]
    export = Path(md).read_text(encoding="utf-8")
    assert "| # | Paper | Data | Result |" in export and f"[2] {MEMO}" in export.split("## References")[1]
    assert MEMO in Path(bib).read_text(encoding="utf-8")

    # a comparison asked as a question is still answered in prose, citing the papers
    outs = list(app.ask("How do FlowTTA and MemoTTA differ?", session))
    assert "<table" not in outs[-1][-1].messages[-1]["content"] and len(session.conversation.turns) == 2
    # a request naming nothing the index holds says so, with the fix
    outs = list(app.ask("compare Zorblax and Quuxformer in a table", session))
    assert "no paper in the index matches Zorblax" in outs[-1][-1].messages[-1]["content"]


# ------------------------------------------------------------------ rag ask, rag chat


def test_cli_ask_and_chat_print_the_table(indexed: Settings) -> None:
    asked = run_cli("ask", "--backend", "extractive", "--json", "make a table of test-time adaptation papers "
                    "with their datasets and code", "-k", "2")
    assert asked.returncode == 0, asked.stderr
    data = json.loads(asked.stdout)
    assert data["columns"] == ["data", "code"] and {r["title"] for r in data["rows"]} == {FLOW, MEMO}
    assert next(r for r in data["rows"] if r["title"] == FLOW)["cells"]["code"]["value"] == \
        "https://github.com/example/flowtta"

    chat = run_cli("chat", "--backend", "extractive",
                   input="Which paper proposes FlowTTA?\nput them in a table\n"
                         "compare FlowTTA and MemoTTA side by side\n")
    assert chat.returncode == 0, chat.stderr
    tables = chat.stdout.split("cells in")
    assert len(tables) == 3  # two tables, after the answer
    assert "[1] FlowTTA" in tables[0] and "Task" in tables[0] and "MemoTTA" not in tables[0].split("Task")[1]
    assert "MemoTTA" in tables[1] and "note: \u201cMemoTTA\u201d: the best match" in chat.stderr


def test_cli_chat_records_the_table_as_a_turn(indexed: Settings, tmp_path: Path) -> None:
    md, bib = tmp_path / "chat.md", tmp_path / "chat.bib"
    chat = run_cli("chat", "--backend", "extractive", "--json", "-k", "2",
                   input=f"make a table of test-time adaptation papers with their data and code\n/md {md}\n"
                         f"/bib {bib}\nWhich of them report an error rate?\n")
    assert chat.returncode == 0, chat.stderr
    table, answer = (json.loads(line) for line in chat.stdout.splitlines())
    assert {r["title"] for r in table["rows"]} == {FLOW, MEMO}
    export = md.read_text(encoding="utf-8")
    assert "| # | Paper | Data | Code |" in export and "https://github.com/example/flowtta |" in export
    assert FLOW in export.split("## References")[1] and MEMO in bib.read_text(encoding="utf-8")
    assert {r["title"] for r in answer["retrieved"]} <= {FLOW, MEMO}  # searched within the table's papers
    assert [c["title"] for c in answer["citations"]] == [FLOW]


# ------------------------------------------------------------------ the API's chat completions


def test_api_chat_completion_returns_the_table_in_markdown(indexed: Settings, rag_home: Path) -> None:
    from rag.render.markdown import split_sources

    from .test_api import client, start_api

    url, server = start_api(rag_home)
    message = [{"role": "user", "content": "compare FlowTTA and MemoTTA in a table by data and code"}]
    with server:
        reply = client(url).chat.completions.create(model="paper-rag", messages=message)
        chunks = list(client(url).chat.completions.create(model="paper-rag", messages=message, stream=True))
        answered = client(url).chat.completions.create(
            model="paper-rag", messages=[{"role": "user", "content": "What does FlowTTA reduce the error rate to?"}])
        # the table sent back in the history is a turn of the replayed conversation
        history = [*message, {"role": "assistant", "content": reply.choices[0].message.content}]
        second = client(url).chat.completions.create(
            model="paper-rag", messages=[*history, {"role": "user", "content": "Tell me more about the second one"}])
        which = client(url).chat.completions.create(
            model="paper-rag", messages=[*history, {"role": "user", "content": "Which of them report an error rate?"}])
        again = client(url).chat.completions.create(
            model="paper-rag", messages=[*history, {"role": "user", "content": "put them in a table"}])
    text = reply.choices[0].message.content
    assert [c["title"] for c in second.model_extra["citations"]] == [MEMO]  # the second row
    assert [c["number"] for c in second.model_extra["citations"]] == [2]
    assert [c["title"] for c in which.model_extra["citations"]] == [FLOW]
    assert {c["title"] for c in which.model_extra["paper_rag"]["also_retrieved"]} <= {MEMO}  # within the table
    assert [r["title"] for r in again.model_extra["paper_rag"]["table"]["rows"]] == [FLOW, MEMO]
    assert split_sources(text)[1] == [(1, ids(indexed)[FLOW]), (2, ids(indexed)[MEMO])]  # its rows, as answers list
    assert "| # | Paper | Data | Code |" in text and f"| 1 | {FLOW}" in text
    assert "https://github.com/example/flowtta" in text  # the extractive backend: only the link is stated
    assert text.startswith("*Note:* \u201cFlowTTA\u201d: the best match")
    table = reply.model_extra["paper_rag"]["table"]
    assert table["columns"] == ["data", "code"] and [r["title"] for r in table["rows"]] == [FLOW, MEMO]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].model_extra["paper_rag"]["table"] == table
    assert "38.2%" in answered.choices[0].message.content and "| # |" not in answered.choices[0].message.content


# ------------------------------------------------------------------ a table is a turn of the conversation


def extractive_conversation(embedder):  # type: ignore[no-untyped-def]
    from rag.chat import Conversation

    return Conversation(Answerer(Settings(llm={"backend": "extractive"}), embedder=embedder))


def test_a_table_turn_is_in_the_export_the_bibtex_and_what_a_follow_up_refers_to(indexed: Settings,
                                                                                  embedder) -> None:  # type: ignore[no-untyped-def]
    from rag.table.chat import in_conversation

    conversation = extractive_conversation(embedder)
    first = conversation.ask("Which paper keeps a memory bank of class prototypes?")
    assert [c.paper.title for c in first.citations] == [MEMO] and first.citations[0].number == 1
    asked = "make a table of test-time adaptation papers with their data and results"
    table = requested_table(maker(indexed, embedder), table_request(asked), k=2,  # type: ignore[arg-type]
                            **in_conversation(conversation))
    conversation.add_table(asked, table)
    numbered = {r.paper.title: r.number for r in table.rows}
    assert numbered == {MEMO: 1, FLOW: 2}  # MemoTTA keeps the number its answer gave it; FlowTTA the next free one

    export = conversation.to_markdown()
    assert f"**Q:** {asked}" in export and "| # | Paper | Data | Result |" in export
    assert f"| 2 | {FLOW} | ImageNet-C | reduces the error rate to 38.2% |" in export.replace("\\", "")  # its cells
    assert "**Evidence**" in export and "- [2] Data:" in export
    references = export.split("## References")[1]
    assert references.count(FLOW) == 1 and references.count(MEMO) == 1 and "[2] FlowTTA" in references
    bibtex = conversation.to_bibtex()
    assert FLOW in bibtex and MEMO in bibtex and PRUNE not in bibtex

    # the model's memory of it: the request, then its rows' numbers and titles, not its cells
    memory = conversation.history()[-2:]
    assert memory[0].content == asked
    assert memory[1].content == f"A table of 2 papers comparing Data, Result: [2] {FLOW}; [1] {MEMO}."

    # "which of them ...": searched within the table's papers, never beyond them
    which = conversation.ask("Which of them report an error rate?")
    assert conversation.turns[-1].condensed_by == "table"
    assert {r["title"] for r in which.retrieved} <= {FLOW, MEMO} and [c.paper.title for c in which.citations] == [FLOW]
    assert which.citations[0].number == 2  # the row's number


def test_a_follow_up_pointing_at_a_row_is_about_that_row(indexed: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    from rag.table.chat import in_conversation

    conversation = extractive_conversation(embedder)
    asked = "compare FlowTTA, MemoTTA and OneCut in a table"
    table = requested_table(TableMaker(conversation.answerer), table_request(asked),  # type: ignore[arg-type]
                            **in_conversation(conversation))
    conversation.add_table(asked, table)
    second = table.rows[1]
    about = conversation.ask("Tell me more about the second one")
    assert conversation.turns[-1].condensed_by == "rows"
    assert [c.paper.id for c in about.citations] == [second.paper.id] and about.citations[0].number == second.number
    # "them" in a new table request: the rows of the last table
    again = requested_table(TableMaker(conversation.answerer), table_request("put them in a table"),  # type: ignore[arg-type]
                            **in_conversation(conversation))
    assert [r.paper.id for r in again.rows] == [second.paper.id]  # the last turn (the answer) cited the second row
