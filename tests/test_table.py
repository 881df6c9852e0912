"""Extraction tables (`rag.table`): cells extracted from one abstract under the JSON schema, checked
against the abstract's sentences (a value no sentence states is never shown), the cell cache and its
invalidation, the overview, the errors, and ``rag table``. The model is `rag.testing.ScriptedBackend`,
answering from a script keyed by (paper, question); one slow test runs the bundled model."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rag.answer import prompts
from rag.answer.answerer import Answerer
from rag.answer.claims import numbers_in
from rag.errors import InputError, PaperNotFoundError
from rag.index.chunking import split_sentences
from rag.ingest.ingestor import Ingestor
from rag.llm import Message
from rag.settings import Settings
from rag.table import BUILTIN, TableMaker, parse_columns
from rag.table.cache import CellCache
from rag.testing import ScriptedBackend

from .conftest import FIXTURES

FLOW, MEMO, PRUNE = ("FlowTTA: Test-Time Adaptation with Normalizing Flows",
                     "MemoTTA: Prototype Memory for Test-Time Segmentation",
                     "Pruning a Language Model Without Retraining")
# what the scripted model answers: (title, column) -> value (None: the JSON null)
SCRIPT: dict[tuple[str, str], str | None] = {
    (FLOW, "task"): "test-time adaptation of image classifiers under distribution shift",
    (FLOW, "data"): "ImageNet-C",
    (FLOW, "result"): "reduces the error rate to 38.2%",
    (FLOW, "model_size"): None,
    (MEMO, "task"): "test-time adaptation for semantic segmentation",
    (MEMO, "data"): "ImageNet-C and Cityscapes",
    (MEMO, "result"): "a gain of 7.9 mIoU",            # the abstract says 4.1: an invented number
    (MEMO, "model_size"): "ResNet-101 backbone",        # a name the abstract never gives
    (PRUNE, "task"): "pruning a language model without retraining",
    (PRUNE, "data"): "WikiText-2",
    (PRUNE, "result"): "stays within 0.3 perplexity of the dense one",
    (PRUNE, "model_size"): "7B-parameter",
}

OVERVIEW_REPLY = ("OneCut removes 50% of the weights by their activation-weighted magnitude [3]. "
                  "OneCut reaches 99.9% accuracy on ImageNet-C [3].")  # the second: a number no abstract states


def scripted(script: dict[tuple[str, str], str | None]) -> Callable[[list[Message]], str]:
    questions = {c.question: key for key, c in BUILTIN.items()}

    def reply(messages: list[Message]) -> str:
        prompt = messages[-1].content
        if "Abstract of the paper" not in prompt:  # the overview, written as an answer
            return OVERVIEW_REPLY
        title = re.search(r'Abstract of the paper "(.+?)"', prompt).group(1)  # type: ignore[union-attr]
        question = re.search(r"Question: (.+)", prompt).group(1)  # type: ignore[union-attr]
        return json.dumps({"value": script.get((title, questions.get(question, question)))})
    return reply


@pytest.fixture
def table_index(embedder, rag_home: Path) -> Settings:  # type: ignore[no-untyped-def]
    settings = Settings(llm={"backend": "llamacpp"})
    Ingestor(settings, embedder=embedder).run([FIXTURES / "table.jsonl"])
    return settings


def maker_for(settings: Settings, embedder, backend: ScriptedBackend) -> TableMaker:  # type: ignore[no-untyped-def]
    return TableMaker(Answerer(settings, embedder=embedder, backend=backend))


def ids(settings: Settings) -> dict[str, str]:
    from rag.library import catalogue

    return {p.title: p.id for p in catalogue(settings).papers.values()}


COLUMNS = parse_columns("task,data,result,model_size,code")


def test_cells_are_extracted_checked_and_cited(table_index: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    backend = ScriptedBackend(scripted(SCRIPT))
    table = maker_for(table_index, embedder, backend).make(paper_ids=[ids(table_index)[FLOW]], columns=COLUMNS)
    data = table.as_dict()
    assert data["columns"] == ["task", "data", "result", "model_size", "code"]
    assert set(data) == {"columns", "rows", "overview"}
    (row,) = data["rows"]
    assert row["title"] == FLOW and row["paper_id"] == ids(table_index)[FLOW]
    cells = row["cells"]
    assert cells["result"] == {"value": "reduces the error rate to 38.2%", "supported": True, "not_stated": False,
                               "evidence": "On ImageNet-C, FlowTTA reduces the error rate to 38.2%, compared with "
                                           "41.5% for TENT.", "reason": None}
    assert cells["data"]["evidence"].startswith("On ImageNet-C")
    assert cells["task"]["supported"] and cells["task"]["evidence"].startswith("We study test-time adaptation")
    assert cells["model_size"] == {"value": None, "evidence": None, "supported": True, "not_stated": True,
                                   "reason": "the model found that the abstract does not state it"}
    # the code column is read from the abstract's link, never asked of the model
    assert cells["code"]["value"] == "https://github.com/example/flowtta"
    asked = [m[-1].content for kind, m in backend.calls if kind == "structured"]
    assert len(asked) == 4 and not any("code" in q.split("Question:")[1] for q in asked)
    # every column shares the system prompt and the fenced abstract (llama.cpp's KV cache), the question last
    prefixes = {q.split("Question:")[0] for q in asked}
    assert len(prefixes) == 1 and "reduces the error rate to 38.2%" in prefixes.pop()
    assert {m[0].content for kind, m in backend.calls if kind == "structured"} == {
        prompts.TABLE_SYSTEM_PROMPT}


def test_a_value_the_abstract_does_not_state_is_never_shown(table_index: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    table = maker_for(table_index, embedder, ScriptedBackend(scripted(SCRIPT))).make(
        paper_ids=[ids(table_index)[MEMO]], columns=COLUMNS)
    cells = table.rows[0].cells
    for key, invented in (("result", "7.9"), ("model_size", "ResNet-101")):
        cell = cells[key]
        assert cell.value is None and not cell.supported and not cell.not_stated
        assert invented.lower() in (cell.reason or "").lower()  # the reason names what the abstract lacks
        assert invented in (cell.withheld or "")
        assert cell.mark == "\u26a0 unsupported"
    shown = [(c["value"], c["evidence"]) for c in table.as_dict()["rows"][0]["cells"].values()]
    assert "7.9" not in json.dumps(shown) and "ResNet" not in json.dumps(shown)  # only the reason names them
    assert cells["data"].value == "ImageNet-C and Cityscapes" and cells["data"].supported
    assert cells["code"].not_stated and cells["code"].reason == "the abstract gives no link"


def test_a_paraphrase_from_nowhere_is_unsupported(table_index: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    script = {**SCRIPT, (PRUNE, "task"): "protein folding with diffusion models"}
    table = maker_for(table_index, embedder, ScriptedBackend(scripted(script))).make(
        paper_ids=[ids(table_index)[PRUNE]], columns=parse_columns("task,model_size"))
    task, size = table.rows[0].cells["task"], table.rows[0].cells["model_size"]
    assert task.value is None and not task.supported and "no sentence" in (task.reason or "")
    assert size.value == "7B-parameter" and size.evidence.startswith("We prune a 7B-parameter")  # type: ignore[union-attr]


def test_cells_are_cached_and_a_changed_abstract_reextracts_only_its_row(
        table_index: Settings, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    backend = ScriptedBackend(scripted(SCRIPT))
    maker = maker_for(table_index, embedder, backend)
    every = list(ids(table_index).values())
    first = maker.make(paper_ids=every, columns=COLUMNS).as_dict()
    assert len([c for c in backend.calls if c[0] == "structured"]) == 3 * 4  # 3 papers x 4 asked columns
    assert len(CellCache(table_index.home / "table-cells.sqlite")) == 3 * 5

    backend.calls.clear()
    again = maker.make(paper_ids=every, columns=COLUMNS)
    assert backend.calls == [] and again.as_dict() == first  # the same table, no model call
    assert all(c.cached for r in again.rows for c in r.cells.values())

    # the same papers under another model: nothing reused
    other = maker_for(table_index, embedder, ScriptedBackend(scripted(SCRIPT), model="other"))
    other.make(paper_ids=every[:1], columns=COLUMNS)
    assert len([c for c in other.answerer.backend_for()[0].calls if c[0] == "structured"]) == 4  # type: ignore[union-attr]

    # one abstract changes (re-ingested): only its row is extracted again
    records = [json.loads(line) for line in (FIXTURES / "table.jsonl").read_text().splitlines()]
    records[2]["abstract"] = records[2]["abstract"].replace("0.3 perplexity", "0.4 perplexity")
    changed = tmp_path / "changed.jsonl"
    changed.write_text("\n".join(json.dumps(r) for r in records))
    Ingestor(table_index, embedder=embedder).run([changed])
    script = {**SCRIPT, (PRUNE, "result"): "stays within 0.4 perplexity of the dense one"}
    backend2 = ScriptedBackend(scripted(script))
    fresh = maker_for(table_index, embedder, backend2).make(paper_ids=every, columns=COLUMNS)
    prompts_seen = [m[-1].content for kind, m in backend2.calls if kind == "structured"]
    assert len(prompts_seen) == 4 and all(PRUNE in p for p in prompts_seen)
    assert fresh.rows[2].cells["result"].value == "stays within 0.4 perplexity of the dense one"
    assert [r.cells["result"].cached for r in fresh.rows] == [True, True, False]


def test_rows_come_from_a_search_and_ids_first(table_index: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    maker = maker_for(table_index, embedder, ScriptedBackend(scripted(SCRIPT)))
    papers, _ = maker.papers("test-time adaptation", k=2)
    assert {p.title for p in papers} == {FLOW, MEMO}
    papers, _ = maker.papers("test-time adaptation", paper_ids=[PRUNE], k=2)  # an exact title names a paper too
    assert [p.title for p in papers][0] == PRUNE and len(papers) == 2


def test_bad_input_says_the_fix(table_index: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="unknown column 'optimizer'") as err:
        parse_columns("task,optimizer")
    assert "--column" in (err.value.fix or "")
    with pytest.raises(InputError, match="named twice"):
        parse_columns("task,task")
    maker = maker_for(table_index, embedder, ScriptedBackend(scripted(SCRIPT)))
    with pytest.raises(PaperNotFoundError) as missing:
        maker.make(paper_ids=["arxiv:9999.99999"], columns=COLUMNS)
    assert "rag papers list" in (missing.value.fix or "")
    with pytest.raises(InputError, match="no papers to compare"):
        maker.make(columns=COLUMNS)


def test_free_text_columns_are_asked_as_written(table_index: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    question = "Which baseline is compared against?"
    backend = ScriptedBackend(scripted({**SCRIPT, (FLOW, question): "TENT"}))
    columns = parse_columns(None, [question])
    table = maker_for(table_index, embedder, backend).make(paper_ids=[FLOW], columns=columns)
    assert table.as_dict()["columns"] == [question]
    cell = table.rows[0].cells[question]
    assert cell.value == "TENT" and "41.5% for TENT" in (cell.evidence or "")


def test_overview_groups_papers_and_cites_their_cells(table_index: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    every = list(ids(table_index).values())
    table = maker_for(table_index, embedder, ScriptedBackend(scripted(SCRIPT))).make(paper_ids=every, columns=COLUMNS)
    overview = table.as_dict()["overview"]
    numbers = {r.paper.title: r.number for r in table.rows}
    # FlowTTA and MemoTTA both give ImageNet-C as their data: one sentence groups them, citing both
    grouped = next(s for s in re.split(r"(?<=\.) ", overview["answer"]) if "ImageNet-C" in s)
    assert f"[{numbers[FLOW]}]" in grouped and f"[{numbers[MEMO]}]" in grouped and f"[{numbers[PRUNE]}]" not in grouped
    cited = {c["number"]: c for c in overview["citations"]}
    assert any("ImageNet-C" in e for e in cited[numbers[MEMO]]["evidence"])
    assert 3 <= len(re.findall(r"[.!?](?:\s|$)", overview["answer"])) <= 5
    assert "2 cells are left empty" in overview["answer"]  # MemoTTA's invented result and size


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_bundled_model_fills_a_row_under_its_grammar(table_index: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    """The real llama.cpp path: the JSON grammar, the shared abstract prefix, and the check."""
    llm = table_index.llm.model_copy(update={"model": "qwen2.5-coder-1.5b"})
    maker = TableMaker(Answerer(table_index.model_copy(update={"llm": llm}), embedder=embedder))
    table = maker.make(paper_ids=[FLOW], columns=parse_columns("data,result"))
    cells = table.rows[0].cells
    assert table.model == "llamacpp:qwen2.5-coder-1.5b"
    assert cells["data"].value and "ImageNet-C" in cells["data"].value and cells["data"].supported
    sentences = split_sentences(table.rows[0].paper.abstract)
    for cell in cells.values():  # whatever the model wrote, a shown value has its sentence, stating its numbers
        assert cell.value is None or cell.evidence in sentences
        assert cell.value is None or numbers_in(cell.value) <= numbers_in(cell.evidence or "")


def test_overview_by_the_model_is_checked_like_an_answer(table_index: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    every = [ids(table_index)[t] for t in (FLOW, MEMO, PRUNE)]
    backend = ScriptedBackend(scripted(SCRIPT))
    table = maker_for(table_index, embedder, backend).make(paper_ids=every, columns=parse_columns("data"),
                                                           overview="model")
    overview = table.as_dict()["overview"]
    assert overview["answer"] == "OneCut removes 50% of the weights by their activation-weighted magnitude [3]."
    (cited,) = overview["citations"]  # numbered as the rows are
    assert cited["number"] == 3 and cited["paper_id"] == every[2]
    assert cited["evidence"] == ["Our method, OneCut, removes 50% of the weights by their activation-weighted "
                                 "magnitude."]
    streamed = [m for kind, m in backend.calls if kind == "stream"]
    assert len(streamed) == 1 and all(t in streamed[0][-1].content for t in (FLOW, MEMO, PRUNE))


# ------------------------------------------------------------------ rag table


@pytest.fixture
def cli(embedder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """``rag ARGS`` in this process, with the session's embedder (no model reload)."""
    import rag.answer.answerer
    import rag.search.retrieval

    from .test_faults_store import cli_in_process

    monkeypatch.setattr(rag.answer.answerer, "Embedder", lambda settings=None: embedder)
    monkeypatch.setattr(rag.search.retrieval, "Embedder", lambda settings=None: embedder)
    return cli_in_process(monkeypatch, capsys)


def test_cli_table_json_markdown_and_csv(table_index: Settings, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    md, csv_path = tmp_path / "t.md", tmp_path / "t.csv"
    result = cli("table", "test-time adaptation", "-k", "2", "--columns", "data,code", "--column", "Which baseline?",
                 "--backend", "extractive", "--md", str(md), "--csv", str(csv_path), "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["columns"] == ["data", "code", "Which baseline?"]
    assert {r["title"] for r in data["rows"]} == {FLOW, MEMO}
    flow = next(r for r in data["rows"] if r["title"] == FLOW)
    assert flow["cells"]["code"]["value"] == "https://github.com/example/flowtta"
    records = map(json.loads, (FIXTURES / "table.jsonl").read_text().splitlines())
    abstracts = {r["title"]: r["abstract"] for r in records}
    for row in data["rows"]:  # a shown value is supported, its evidence a sentence of its own abstract
        for cell in row["cells"].values():
            assert set(cell) == {"value", "evidence", "supported", "not_stated", "reason"}
            assert cell["value"] is None or (cell["supported"] and cell["evidence"] in abstracts[row["title"]])
    assert "| # | Paper | Data | Code | Which baseline? |" in md.read_text()
    assert "https://github.com/example/flowtta" in md.read_text() and "**Evidence**" in md.read_text()
    header = csv_path.read_text().splitlines()[0]
    assert header.startswith("number,paper_id,title,data,data status,data evidence,code")
    again = cli("table", "test-time adaptation", "-k", "2", "--columns", "data,code", "--column", "Which baseline?",
                "--backend", "extractive")
    assert again.code == 0 and "FlowTTA" in again.out and "cells in" in again.out


def test_cli_table_errors_say_the_fix(table_index: Settings, cli) -> None:  # type: ignore[no-untyped-def]
    bad_column = cli("table", "adaptation", "--columns", "task,optimizer")
    assert bad_column.code == 2 and "unknown column 'optimizer'" in bad_column.err and "--column" in bad_column.err
    bad_paper = cli("table", "--papers", "arxiv:9999.99999", "--backend", "extractive")
    assert bad_paper.code == 2 and "rag papers list" in bad_paper.err
    nothing = cli("table", "--backend", "extractive")
    assert nothing.code == 2 and "--papers" in nothing.err


# ------------------------------------------------------------------ POST /v1/table and the compare_papers MCP tool


def test_api_and_mcp_return_the_table_rag_table_prints(table_index: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    import anyio
    from fastapi.testclient import TestClient
    from mcp import Client

    from ui.api import create_app
    from ui.mcp_server import build_server
    from ui.service import PaperService
    from ui.shared import AnswererPool

    backend = ScriptedBackend(scripted(SCRIPT))
    answerer = Answerer(table_index, embedder=embedder, backend=backend)
    service = PaperService(table_index, pool=AnswererPool(table_index, answerer=answerer))
    http = TestClient(create_app(table_index, service=service))
    body = {"papers": [ids(table_index)[MEMO]], "columns": ["data", "result"], "questions": ["Which baseline?"]}
    response = http.post("/v1/table", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    expected = TableMaker(answerer).make(paper_ids=[ids(table_index)[MEMO]],
                                         columns=parse_columns(["data", "result"], ["Which baseline?"])).as_dict()
    assert data == expected  # the library's object, as rag table --json prints it
    result = data["rows"][0]["cells"]["result"]
    assert result["supported"] is False and result["value"] is None

    for bad, status, needle in [({"query": "x", "columns": ["optimizer"]}, 400, "unknown column"),
                                ({"papers": ["arxiv:9999.99999"]}, 404, "no paper with id"),
                                ({"query": "x", "k": 0}, 400, "k"),
                                ({}, 400, "no papers to compare"),
                                ({"query": "x", "overview": "poem"}, 400, "overview")]:
        failed = http.post("/v1/table", json=bad)
        assert failed.status_code == status and needle in failed.json()["error"]["message"], (bad, failed.text)

    async def check() -> None:
        async with Client(build_server(table_index, service)) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert tools["compare_papers"].output_schema and tools["compare_papers"].annotations.read_only_hint
            result = await client.call_tool("compare_papers", body)
            assert not result.is_error and result.structured_content == expected
            assert "| # | Paper | Data | Result | Which baseline? |" in result.content[0].text
            assert "\u26a0 unsupported" in result.content[0].text and "7.9 mIoU" not in result.content[0].text
            failed = await client.call_tool("compare_papers", {"query": "x", "columns": ["optimizer"]})
            assert failed.is_error and "unknown column" in failed.content[0].text and "fix:" in failed.content[0].text

    anyio.run(check)


def test_a_value_naming_the_paper_and_a_number_needs_one_sentence_for_the_number(
        table_index: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    """The title names the paper's method: "MemoTTA gains 4.1 mIoU" is held by the sentence with 4.1,
    which does not name MemoTTA; a value stitching numbers from two sentences is not one fact."""
    script = {**SCRIPT, (MEMO, "result"): "MemoTTA gains 4.1 mIoU over the source model",
              (PRUNE, "result"): "removes 50% of the weights and stays within 0.3 perplexity"}
    table = maker_for(table_index, embedder, ScriptedBackend(scripted(script))).make(
        paper_ids=[MEMO, PRUNE], columns=parse_columns("result"))
    memo, prune = (row.cells["result"] for row in table.rows)
    assert memo.value == "MemoTTA gains 4.1 mIoU over the source model" and "4.1 mIoU" in (memo.evidence or "")
    assert prune.value is None and "no one sentence of the abstract states 0.3, 50" in (prune.reason or "")


# ------------------------------------------------------------------ the web chat's Compare panel


def test_web_compare_streams_rows_and_writes_the_exports(table_index: Settings, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import threading

    from ui.compare import ComparePanel
    from ui.shared import AnswererPool

    answerer = Answerer(table_index, embedder=embedder, backend=ScriptedBackend(scripted(SCRIPT)))
    panel = ComparePanel(AnswererPool(table_index, answerer=answerer), threading.BoundedSemaphore(1), tmp_path)
    every = ", ".join(ids(table_index)[t] for t in (FLOW, MEMO, PRUNE))
    steps = list(panel.compare(every, ["data", "result"], "", 10))
    assert [s[0].count("<tr data-paper") for s in steps] == [0, 1, 2, 3, 3]  # a row at a time
    assert "0 of 3 rows" in steps[0][0] and "overview" in steps[-1][0] and steps[-2][1] is None
    html_out, md, csv_out, bib = steps[-1]
    assert 'title="On ImageNet-C, FlowTTA reduces the error rate' in html_out  # evidence on hover
    assert "\u26a0 unsupported" in html_out and "7.9" not in html_out.split("</table>")[0].split("title=")[0]
    assert "| 1 | FlowTTA" in Path(md).read_text() and Path(csv_out).read_text().startswith("number,paper_id")
    assert Path(bib).read_text().count("@") == 3
    assert panel.slots.acquire(blocking=False)  # the slot came back
    panel.slots.release()
    error = list(panel.compare("x", ["optimizer"], "", 10))
    assert len(error) == 1 and "unknown column" in error[0][0]
    searched = list(panel.compare("test-time adaptation", ["data"], "", 2))
    assert searched[-1][0].count("<tr data-paper") == 2


def test_ollama_is_asked_with_the_json_schema(table_index: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    """The Ollama backend sends the cell's schema as ``format`` (its structured outputs), greedy, bounded."""
    from rag.table.cells import VALUE_SCHEMA, VALUE_TOKENS

    from .ollama_standin import OllamaStandIn

    def generate(messages: list[dict[str, object]], options: dict[str, object], fmt: object) -> Iterator[str]:
        yield json.dumps({"value": "ImageNet-C" if "datasets" in str(messages[-1]["content"]) else None})

    with OllamaStandIn(generate=generate) as standin:
        settings = table_index.model_copy(update={"llm": table_index.llm.model_copy(
            update={"backend": "ollama", "ollama_url": standin.url})})
        table = TableMaker(Answerer(settings, embedder=embedder)).make(paper_ids=[FLOW],
                                                                       columns=parse_columns("data,model_size"))
        asked = [r.body for r in standin.chat_requests()]
    assert table.model == "ollama:qwen2.5-coder:1.5b"
    assert table.rows[0].cells["data"].value == "ImageNet-C" and table.rows[0].cells["model_size"].not_stated
    assert len(asked) == 2 and all(b["format"] == VALUE_SCHEMA and b["stream"] is False for b in asked)
    assert all(b["options"]["num_predict"] == VALUE_TOKENS and b["options"]["temperature"] == 0.0 for b in asked)


def test_a_changed_check_threshold_does_not_reuse_cached_verdicts(table_index: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    backend = ScriptedBackend(scripted(SCRIPT))
    maker_for(table_index, embedder, backend).make(paper_ids=[FLOW], columns=parse_columns("data"))
    stricter = table_index.model_copy(update={"answer": table_index.answer.model_copy(
        update={"support_threshold": 0.99})})
    again = maker_for(stricter, embedder, backend).make(paper_ids=[FLOW], columns=parse_columns("data"))
    assert len([c for c in backend.calls if c[0] == "structured"]) == 2  # asked again: the verdict depends on it
    assert again.rows[0].cells["data"].value is None and "under 0.99" in (again.rows[0].cells["data"].reason or "")
