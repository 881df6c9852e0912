"""`rag bench`: the synthetic corpus generator and a quick run end to end.

Timings belong in the bench output, not here: these tests check that the generator makes
loadable, unique papers and that a run writes its report files, never how fast anything is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.synthetic import generate, iter_records, synthetic_id
from rag.index.corpus import normalise_title
from rag.index.loaders import load_paths

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "papers.jsonl"


def test_synthetic_papers_load_through_the_real_loader(tmp_path: Path) -> None:
    path = generate(500, tmp_path / "synthetic.jsonl", seed=3)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 500
    records = [json.loads(line) for line in lines]
    assert set(records[0]) == {"id", "title", "abstract", "authors", "categories", "update_date", "doi"}
    assert records[0]["doi"] is None
    assert len({r["id"] for r in records}) == 500
    assert len({normalise_title(r["title"]) for r in records}) == 500

    report = load_paths([path])
    assert (len(report.papers), len(report.errors), len(report.merged)) == (500, 0, 0)
    paper = report.papers["arxiv:" + synthetic_id(0)]  # arXiv-style ids are recognised as arXiv ids
    assert paper.arxiv_id == "9000.00000" and paper.authors and paper.categories and paper.year


def test_synthetic_generator_is_deterministic_and_recombines_bundled_sentences(tmp_path: Path) -> None:
    a = generate(50, tmp_path / "a.jsonl", seed=1).read_bytes()
    assert a == generate(50, tmp_path / "b.jsonl", seed=1).read_bytes()
    assert a != generate(50, tmp_path / "c.jsonl", seed=2).read_bytes()
    bundled = BUNDLED.read_text(encoding="utf-8")
    first = next(iter_records(1, seed=1))
    assert first["abstract"].split(". ")[0] in bundled


def test_synthetic_ids_are_unique_arxiv_style() -> None:
    assert synthetic_id(99_999) == "9000.99999" and synthetic_id(100_000) == "9001.00000"
    with pytest.raises(ValueError):
        synthetic_id(100_000_000)


@pytest.mark.slow
def test_quick_bench_writes_json_and_plot(tmp_path: Path) -> None:
    from eval.bench import run_bench

    corpus = tmp_path / "tiny.jsonl"
    corpus.write_text("".join(BUNDLED.read_text(encoding="utf-8").splitlines(keepends=True)[:6]), encoding="utf-8")
    out = tmp_path / "bench"
    results = run_bench(out=out, quick=True, corpus=[corpus], rounds=1, n_queries=6, tokenize_texts=300,
                        skip=("cold_start", "llm", "answer", "web", "table"))

    data = json.loads((out / "bench.json").read_text())
    steps = data["steps"]
    assert set(steps) >= {"first_ingest", "reingest", "retrieval", "tokenization", "scale", "throughput"}
    assert steps["first_ingest"]["papers"] == 6 and len(steps["first_ingest"]["ingest_s"]) == 1
    assert steps["reingest"]["chunks_embedded"] == [0]  # unchanged corpus: nothing embedded again
    assert steps["retrieval"]["queries"] == 6 and steps["retrieval"]["ratio"] > 0
    assert steps["tokenization"]["max_abs_diff_vs_sentence_transformers"] < 1e-5
    for name in ("scale", "throughput", "cold_start", "llm", "answer", "web", "table", "memory"):
        assert steps[name]["skipped"], name
    rows = [row for step in steps.values() for row in step["rows"]]
    assert {row["status"] for row in rows} <= {"pass", "miss", "info", "skipped"}  # no step errored
    png = out / "bench.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert results["run_dir"] == str(out)


def test_table_bench_times_a_cold_and_a_cached_table(bundled_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    """`rag bench --only table` with a scripted model: cold cells are timed, the cached table is read back."""
    from eval.bench.table import bench_table
    from rag.answer.answerer import Answerer
    from rag.settings import Settings
    from rag.testing import ScriptedBackend

    settings = Settings(home=bundled_copy, llm={"backend": "llamacpp"})
    backend = ScriptedBackend('{"value": null}')
    gold = Path(__file__).resolve().parent.parent / "data" / "eval" / "table-gold.jsonl"
    step = bench_table(bundled_copy, answerer=Answerer(settings, embedder=embedder, backend=backend), rows=3,
                       gold=gold)
    figures = step["table"]
    assert figures["papers"] == 3 and figures["columns"] == 5 and figures["model"] == "llamacpp:scripted"
    assert len([c for c in backend.calls if c[0] == "structured"]) == 15  # cold: every cell asked once
    assert figures["cached_s"] < figures["cold_s"]
    assert [r["measurement"] for r in step["rows"]][2] == "table: 3 x 5 cached"


def test_answer_bench_compares_the_pipeline_with_the_limit_of_its_own_prompts() -> None:
    from eval.bench.answer import summarise

    rows = [{"prompt_tokens": 300.0, "answer_tokens": 24.0, "ttft_s": 2.5, "total_s": 5.0, "entail_s": 0.4,
             "check_s": 0.5},
            {"prompt_tokens": 0.0, "answer_tokens": 0.0, "ttft_s": 0.1, "total_s": 0.1, "entail_s": 0.0,
             "check_s": 0.0}]  # an abstention before any generation: no prompt, left out of the limit
    figures = summarise(rows, prompt_rate=150.0, decode_rate=12.0)
    assert figures["questions"] == 2 and figures["generated"] == 1
    assert figures["limit_ttft_median_s"] == pytest.approx(300 / 150 + 1 / 12)
    assert figures["limit_total_median_s"] == pytest.approx(300 / 150 + 24 / 12)
    assert figures["ratio_total"] == pytest.approx(5.0 / 4.0)
    assert figures["ratio_ttft"] == pytest.approx(2.5 / (2 + 1 / 12))


def test_web_step_compares_the_pages_first_words_with_the_pipelines_first_token() -> None:
    from eval.bench.web import summarise_web

    rows = [{"stage_s": 0.08, "first_words_s": 9.9, "total_s": 14.0, "ttft_s": 9.6},
            {"stage_s": 0.12, "first_words_s": 0.4, "total_s": 0.4, "ttft_s": 0.0},  # abstained: no model ran
            {"stage_s": 0.09, "first_words_s": 8.1, "total_s": 12.0, "ttft_s": 7.3}]
    step = summarise_web(rows, [1.0, 1.0])
    web = step["web"]
    assert web["questions"] == 3 and web["generated"] == 2 and web["stage_median_s"] == pytest.approx(0.09)
    assert web["first_words_minus_ttft_median_s"] == pytest.approx((0.3 + 0.8) / 2)  # the abstention left out
    assert [r["status"] for r in step["rows"]] == ["pass", "miss"]


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium missing")
def test_web_step_times_a_question_in_a_real_page(bundled_copy: Path) -> None:
    """The page's own clock, on the extractive backend: the stage line comes first, then the words."""
    from eval.bench.web import ask_in_page, web_page

    with web_page(bundled_copy, backend="extractive") as page:
        times = [ask_in_page(page, q, timeout_s=120) for q in (
            "How many tokens was PLaMo-100B trained on from scratch?", "What does VIVAT mitigate in VAE training?")]
    for t in times:
        assert 0 < t["stage_s"] <= t["first_words_s"] <= t["total_s"] < 120, t


@pytest.mark.slow
def test_memory_step_reports_a_cold_ask_and_a_server_by_stage(bundled_copy: Path) -> None:
    from eval.bench.memory import bench_memory, json_figures

    result = bench_memory(bundled_copy, answers=2, env={"RAG_LLM__BACKEND": "extractive"}, log=lambda _: None)
    ask = result["ask"]["stages"]
    assert [s["stage"] for s in ask] == ["imports", "index_open", "embedder", "model_assemble", "model_load",
                                         "first_answer"]
    for stage in ask:
        assert stage["seconds"] >= 0 and 0 < stage["rss"] <= stage["peak_rss"], stage
        assert stage["pss"] > 0 and stage["rss_anon"] + stage["rss_file"] <= stage["rss"] + 2**20, stage
    assert ask[-1]["peak_rss"] >= ask[0]["peak_rss"] and result["ask"]["backend"] == "extractive"
    assert result["real_ask"]["seconds"] > 0 and result["real_ask"]["memory"]["peak_rss"] > 50 * 2**20
    serve = result["serve"]["stages"]
    assert [s["stage"] for s in serve] == ["started", "answer 1", "answer 2"] and serve[-1]["rss"] > 50 * 2**20
    assert result["serve"]["torch"] is False  # the ONNX export serves queries and answer checks
    figures = json.loads(json.dumps(json_figures(result)))
    assert figures["serve_answers"] == 2 and figures["serve_rss_mb"] > 50 and len(figures["ask_stages"]) == 6
    assert [row["status"] for row in result["rows"]].count("info") == len(result["rows"]) - 1  # the ask target


def test_bench_command_rejects_a_malformed_scale() -> None:
    from tests.conftest import run_cli

    got = run_cli("bench", "--quick", "--scale", "ten")
    assert got.returncode == 2 and "--scale 'ten' is not a list of paper counts" in got.stderr
    got = run_cli("bench", "--only", "scale,warp")
    assert got.returncode == 2 and "unknown bench step(s): warp" in got.stderr and "first_ingest" in got.stderr
    assert "Traceback" not in got.stderr


def test_server_scale_takes_sizes_none_or_the_default() -> None:
    from eval.bench import parse_server_sizes
    from rag.errors import InputError

    assert parse_server_sizes(None) is None  # the default: the smallest scale size
    assert parse_server_sizes("none") == [] and parse_server_sizes(" None ") == []
    assert parse_server_sizes("10000,100_000") == [10_000, 100_000]
    with pytest.raises(InputError, match="not a list of paper counts"):
        parse_server_sizes("ten")


def test_projection_is_linear_and_keeps_the_fixed_memory_fixed() -> None:
    from eval.bench import project

    one = [{"mode": "embedded", "papers": 10_000, "ingest_s": 2_000.0, "disk_bytes": 1e8, "peak_rss_bytes": 2e9,
            "rss_after_load_bytes": 1e9}]
    got = project(one, target=20_000)
    assert got["ingest_s"]["projected"] == pytest.approx(4_000.0)
    assert got["disk_bytes"]["projected"] == pytest.approx(2e8)
    assert got["peak_rss_bytes"]["projected"] == pytest.approx(3e9)  # 1 GB fixed + 1 GB per 10k papers

    two = [{"mode": "embedded", "papers": n, "ingest_s": 10.0 + n / 5, "disk_bytes": 5e3 * n,
            "peak_rss_bytes": 1e9 + 1e5 * n} for n in (10_000, 30_000)]
    two.append({**two[0], "mode": "server", "ingest_s": 1e9})  # server points do not shape the projection
    got = project(two, target=2_500_000)
    assert got["ingest_s"]["projected"] == pytest.approx(10.0 + 500_000)
    assert got["peak_rss_bytes"]["projected"] == pytest.approx(1e9 + 2.5e11)
    assert "server" not in got  # one server size: no line to fit

    served = [{**p, "mode": "server", "peak_rss_bytes": 3e8 + 10.0 * p["papers"],
               "server_peak_rss_bytes": 1e8 + 3e3 * p["papers"]} for p in two[:2]]
    got = project(two[:2] + served, target=2_500_000)
    assert got["server"]["peak_rss_bytes"]["projected"] == pytest.approx(3e8 + 2.5e7)  # flat ingest process
    assert got["server"]["server_peak_rss_bytes"]["projected"] == pytest.approx(1e8 + 7.5e9)
    assert "into a Chroma server: ingest process" in got["summary"]


def test_throughput_measures_onnx_runtime_on_our_export(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from eval.bench import bench_throughput

    texts = [json.loads(line)["abstract"] for line in BUNDLED.read_text(encoding="utf-8").splitlines()[:12]]
    got = bench_throughput(embedder, texts, tmp_path, batch_sizes=(16,), backends=("torch",), rounds=1,
                           log=lambda _: None)
    backends = {r["backend"] for r in got["results"]}
    assert {"torch", "onnxruntime", "onnxruntime-int8"} <= backends, got["notes"]
    assert got["min_cosine_to_torch"]["onnxruntime"] > 0.9999  # fp32: the same vectors
    assert 0.5 < got["min_cosine_to_torch"]["onnxruntime-int8"] < 0.9999  # int8: close, not equal
    assert got["query_latency"]["onnx_ms"] > 0 and got["query_latency"]["torch_ms"] > 0
    assert all(r["chunks_per_s"] > 0 for r in got["results"])


@pytest.mark.heavy
def test_llm_prompt_sweep_builds_prompts_of_the_asked_sizes() -> None:
    pytest.importorskip("llama_cpp")
    from eval.bench.llm import prompt_sweep
    from rag.settings import LLMSettings

    got = prompt_sweep((150, 300), runs=1, settings=LLMSettings(model="smollm2-135m"))
    assert [p["target_tokens"] for p in got] == [150, 300]
    for point in got:
        assert 0.8 * point["target_tokens"] <= point["prompt_tokens"] <= 1.2 * point["target_tokens"]
        assert point["ttft_s"] > 0 and len(point["runs"]) == 1


def test_hash_embedder_ingests_without_a_model(tmp_path: Path) -> None:
    """The store-only bench's stand-in: the real chunker's chunks, vectors seeded from each chunk's
    text (what its hash is made of), unit length, no model ever touched (its ``model`` raises)."""
    import numpy as np

    from eval.synthetic import generate
    from rag.index.chunking import Chunker
    from rag.index.store import Store
    from rag.ingest.ingestor import Ingestor
    from rag.settings import Settings
    from rag.testing import HashEmbedder, hash_vector

    corpus = generate(40, tmp_path / "c.jsonl", seed=5)
    settings = Settings(home=tmp_path / "home")
    emb = HashEmbedder(settings.embedding, name="stand-in")
    summary = Ingestor(settings, embedder=emb).run([corpus])
    chunks = Chunker(emb, settings.chunking.max_tokens).chunk(list(load_paths([corpus]).papers.values()))
    assert summary.papers_total == 40 and summary.chunks_embedded == len(chunks) == emb.encoded
    got = Store(settings).collection().get(ids=[chunks[0].id], include=["embeddings"])
    vector = np.asarray(got["embeddings"][0])
    assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    assert np.allclose(vector, hash_vector(chunks[0].embed_text, 384), atol=1e-6)
    assert not np.allclose(vector, hash_vector(chunks[1].embed_text, 384))
    assert Store(settings).identity().embedder == "stand-in"  # type: ignore[union-attr]


@pytest.mark.slow
def test_store_only_scale_prints_one_object_per_point(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    got = run_cli("bench", "--only", "scale", "--store-only", "--scale", "300,600", "--server-scale", "300",
                  "--json", "--out", str(tmp_path / "b"))
    assert got.returncode == 0, got.stderr[-2000:]
    points = json.loads(got.stdout)["scale"]
    # a failed point: scale_error says why
    assert [(p["papers"], p["mode"]) for p in points] == [(300, "embedded"), (300, "server"), (600, "embedded")], \
        got.stdout[-2000:]
    assert all(p["store_only"] for p in points)
    served = points[1]  # the server's process and its data folder are counted apart from the ingest's
    assert served["server_peak_rss_mb"] > 50 and points[0]["server_peak_rss_mb"] is None
    assert served["disk_mb_by_part"]["chroma_hnsw"] > 0 and served["disk_mb_by_part"]["chroma_sqlite"] > 0
    for p in points:
        assert {"papers", "chunks", "seconds", "ingest_peak_rss_mb", "reader_rss_mb", "disk_mb",
                "retrieval_ms_p50", "retrieval_ms_p95"} <= set(p)
        assert p["chunks"] >= p["papers"] and p["seconds"] > 0 and p["disk_mb"] > 0
        assert 50 < p["ingest_peak_rss_mb"] < 4000 and 50 < p["reader_rss_mb"] < 4000
        assert 0 < p["retrieval_ms_p50"] <= p["retrieval_ms_p95"]
        assert sum(p["disk_mb_by_part"].values()) == pytest.approx(p["disk_mb"], abs=0.5)
    assert "measurement" not in got.stdout  # --json: no table on stdout
