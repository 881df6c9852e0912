"""The torch-free query path: the ONNX export written by the torch model, the same vectors
through ONNX Runtime, no torch import in a search, and fallbacks when the export is missing,
damaged or switched off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.index.embeddings import ONNX_MAX_TEXTS, Embedder
from rag.settings import EmbeddingSettings

pytestmark = pytest.mark.slow

TEXTS = [
    "Dataset distillation by matching expert training trajectories",
    "What is DRA-GRPO?",
    "How do video diffusion models keep long generations consistent under a fixed memory budget?",
    "BM25",
]


def _embedder(cache: Path, **kw: object) -> Embedder:
    return Embedder(EmbeddingSettings(cache_dir=cache, **kw))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A cache folder holding the export, and torch's vectors for TEXTS."""
    cache = tmp_path_factory.mktemp("cache")
    torch_side = _embedder(cache)
    vectors = torch_side.encode(TEXTS)
    return cache, vectors


def test_first_torch_encode_writes_a_checked_export(exported: tuple[Path, np.ndarray]) -> None:
    cache, _ = exported
    files = list((cache / "onnx").glob("*.onnx"))
    assert len(files) == 1 and files[0].stat().st_size > 1_000_000
    assert not list((cache / "onnx").glob("*.tmp"))


def test_onnx_vectors_match_torch_without_loading_it(exported: tuple[Path, np.ndarray]) -> None:
    cache, expected = exported
    fresh = _embedder(cache)
    got = fresh.encode(TEXTS)
    assert "model" not in fresh.__dict__, "the torch model was loaded for a small batch"
    assert fresh.encoded == len(TEXTS)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # one query, as retrieval embeds it
    assert np.abs(fresh.encode_query(TEXTS[1]) - expected[1]).max() < 1e-5


def test_big_batches_use_onnx_until_torch_is_loaded(exported: tuple[Path, np.ndarray]) -> None:
    """An answer's support check may embed more than ONNX_MAX_TEXTS sentences: ONNX Runtime still,
    with no torch loaded (a serving process would hold ~500 MB more for it). An ingest's big batch
    loads torch, and big batches then stay on it (faster there)."""
    cache, expected = exported
    many = (TEXTS * (ONNX_MAX_TEXTS // len(TEXTS) + 1))[: ONNX_MAX_TEXTS + 1]
    answering = _embedder(cache)
    got = answering.encode(many)
    assert "model" not in answering.__dict__, "torch was loaded to embed an answer's sentences"
    assert np.abs(got[: len(TEXTS)] - expected).max() < 1e-5
    ingesting = _embedder(cache)
    got = ingesting.encode(many, load_onnx=False)
    assert "model" in ingesting.__dict__ and "_onnx" not in ingesting.__dict__
    assert np.abs(got[: len(TEXTS)] - expected).max() < 1e-5
    assert not ingesting._use_onnx(len(many))


def test_damaged_export_falls_back_to_torch_and_is_removed(exported: tuple[Path, np.ndarray],
                                                          tmp_path: Path) -> None:
    cache, expected = exported
    source = next((cache / "onnx").glob("*.onnx"))
    (tmp_path / "onnx").mkdir()
    broken = tmp_path / "onnx" / source.name
    broken.write_bytes(b"not a model")
    fresh = _embedder(tmp_path)
    got = fresh.encode(TEXTS)
    assert np.abs(got - expected).max() < 1e-5
    assert "model" in fresh.__dict__
    # the damaged file was replaced by a fresh, checked export, which the same process now uses
    assert broken.stat().st_size > 1_000_000
    assert fresh._use_onnx(1)
    assert np.abs(fresh.encode_query(TEXTS[0]) - expected[0]).max() < 1e-5


def test_an_ingest_holding_torch_keeps_small_batches_on_torch(exported: tuple[Path, np.ndarray]) -> None:
    """An ingest loads torch for its batches; its last few chunks do not load ONNX Runtime too,
    while queries in the same process still do, and a loaded session keeps serving small batches."""
    cache, expected = exported
    fresh = _embedder(cache)
    many = (TEXTS * (ONNX_MAX_TEXTS // len(TEXTS) + 1))[: ONNX_MAX_TEXTS + 1]
    fresh.encode(many, load_onnx=False)
    got = fresh.encode(TEXTS, load_onnx=False)
    assert "model" in fresh.__dict__ and "_onnx" not in fresh.__dict__
    assert np.abs(got - expected).max() < 1e-5
    fresh.encode_query(TEXTS[0])  # a query loads the session
    assert "_onnx" in fresh.__dict__ and fresh._use_onnx(1, load=False)
    cold = _embedder(cache)  # nothing loaded yet: a small ingest needs no torch at all
    cold.encode(TEXTS, load_onnx=False)
    assert "model" not in cold.__dict__


def test_switched_off_writes_nothing(tmp_path: Path) -> None:
    off = _embedder(tmp_path, onnx_queries=False)
    off.encode(TEXTS[:2])
    assert not (tmp_path / "onnx").exists()


def test_a_search_process_imports_neither_torch_nor_numba(bundled_copy: Path,
                                                         exported: tuple[Path, np.ndarray]) -> None:
    """Queries embed through the export; bm25s is imported without numba (rag.index.lexical.bm25s_module)."""
    cache, _ = exported
    code = (
        "import sys\n"
        "from rag.search.retrieval import Retriever\n"
        "from rag.settings import Settings\n"
        "result = Retriever(Settings()).search('dataset distillation with expert trajectories')\n"
        "assert 'Distillation' in result.hits[0].paper.title, result.hits[0].paper.title\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'sentence_transformers', 'sklearn', 'numba', 'llvmlite')\n"
        "               if m in sys.modules)\n"
        "print('heavy:', ','.join(heavy) or '-')\n"
    )
    env = {"RAG_HOME": str(bundled_copy), "RAG_EMBEDDING__CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
           "PATH": "/usr/bin:/bin"}
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    assert "heavy: -" in got.stdout, got.stdout
