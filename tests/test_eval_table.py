"""``rag eval table`` (`eval.table`): the gold table is copied from the bundled abstracts, and a
scripted table is scored as counted by hand."""

from __future__ import annotations

import json
from pathlib import Path

from eval.table import evaluate_table, load_gold, matches, unsupported
from rag.answer.answerer import Answerer
from rag.index.corpus import Paper
from rag.settings import Settings
from rag.table import BUILTIN
from rag.table.cache import CellCache
from rag.testing import ScriptedBackend

from .conftest import BUNDLED
from .test_table import FLOW, MEMO, PRUNE, SCRIPT, ids, scripted, table_index  # noqa: F401  (a fixture)

GOLD = Path(__file__).resolve().parent.parent / "data" / "eval" / "table-gold.jsonl"


def test_the_gold_table_is_copied_from_the_bundled_abstracts() -> None:
    papers = {p.id: p for p in (Paper(**json.loads(line)) for line in BUNDLED.read_text().splitlines())}
    gold = load_gold(GOLD)
    assert len(gold) == 20 and len({g["paper_id"] for g in gold}) == 20
    for g in gold:
        paper = papers[g["paper_id"]]
        text = f"{paper.title} {paper.abstract}".lower()
        assert g["title"] == paper.title and list(g["cells"]) == list(BUILTIN)
        for cell in g["cells"].values():
            if cell is not None:  # every key is in the abstract, and the gold value itself scores as right
                assert cell["keys"] and all(k.lower() in text for k in cell["keys"])
                assert matches(cell["value"], cell) and not unsupported(cell["value"], paper)
    silent = sum(c is None for g in gold for c in g["cells"].values())
    assert 20 <= silent <= 40  # enough "not stated" cells to measure its recall


def test_a_scripted_table_is_scored_as_counted_by_hand(table_index: Settings, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    def cell(value: str | None, *keys: str) -> dict[str, object] | None:
        return None if value is None else {"value": value, "keys": list(keys)}

    known = ids(table_index)
    gold = [  # columns task, data, result, model_size
        {"paper_id": known[FLOW], "title": FLOW, "cells": {
            "task": cell("test-time adaptation of image classifiers", "test-time adaptation"),
            "data": cell("ImageNet-C", "ImageNet-C"), "result": cell("error rate to 38.2%", "38.2"),
            "model_size": None}},  # script: right, right, right, not stated (right)
        {"paper_id": known[MEMO], "title": MEMO, "cells": {
            "task": cell("semantic segmentation", "segmentation"),
            "data": cell("ImageNet-C and Cityscapes", "Cityscapes"),
            "result": cell("a gain of 4.1 mIoU", "4.1"),  # script: 7.9, withheld: wrong
            "model_size": None}},  # script: ResNet-101, withheld: an empty cell where the gold is silent: right
        {"paper_id": known[PRUNE], "title": PRUNE, "cells": {
            "task": cell("pruning a language model", "pruning"), "data": None,  # script: WikiText-2: shown where silent
            "result": cell("within 0.3 perplexity", "0.3"), "model_size": cell("7B-parameter", "7B")}},
    ]
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps(g) + "\n" for g in gold))
    answerer = Answerer(table_index, embedder=embedder, backend=ScriptedBackend(scripted(SCRIPT)))
    summary = evaluate_table(path, table_index, tmp_path / "run", answerer=answerer)
    m = summary["metrics"]
    assert summary["cells"] == 12 and summary["papers"] == 3
    assert m["cell_accuracy"]["value"] == round(10 / 12, 4)  # wrong: MEMO's result, PRUNE's data
    assert m["value_accuracy"]["value"] == round(8 / 9, 4)
    assert m["not_stated_precision"]["value"] == 1.0 and m["not_stated_recall"]["value"] == round(1 / 3, 4)
    assert summary["counts"] == {"unsupported_shown": 0, "shown_where_silent": 1, "withheld": 2, "gold_silent": 3}
    lo, hi = m["cell_accuracy"]["ci"]
    assert lo <= 10 / 12 <= hi
    assert summary["timing"]["timed_cells"] == 12 and summary["timing"]["cached_cells"] == 0
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 12
    # the cells went to the run's own cache (an empty cache is falsy: it once fell back to the data home's)
    assert len(CellCache(tmp_path / "run" / "cells.sqlite")) == 12
    assert not (table_index.home / "table-cells.sqlite").exists()
    again = evaluate_table(path, table_index, tmp_path / "run", answerer=answerer)  # resumed from the run's cell cache
    assert again["metrics"] == summary["metrics"] and again["timing"]["cached_cells"] == 12
    assert again["timing"]["seconds_per_cell_median"] == summary["timing"]["seconds_per_cell_median"]
