"""Settings catch mistakes: unknown keys in a group, RAG_* variables that set nothing, typos in config files.

Fast: no model, no index.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from rag.errors import InputError
from rag.settings import LLMSettings, Settings, check_environment, load_settings, unknown_variables, variable_names

from .conftest import BIN

GROUPS = [name for name, f in Settings.model_fields.items()
          if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)]


def test_a_mistyped_key_in_a_group_is_an_error_naming_the_nearest_field() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(llm={"backnd": "ollama"})
    assert "unknown setting 'backnd' (did you mean 'backend'?)" in str(info.value)
    assert info.value.errors()[0]["loc"] == ("llm",)


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_forbids_unknown_keys(group: str) -> None:
    with pytest.raises(ValidationError, match="unknown setting 'zzz_not_a_field'"):
        Settings(**{group: {"zzz_not_a_field": 1}})


def test_a_mistyped_nested_variable_fails_settings_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_LLM__BACKND", "ollama")
    with pytest.raises(ValidationError, match="did you mean 'backend'"):
        Settings()


def test_unknown_variables_name_the_nearest_one() -> None:
    env = {"RAG_LLM__BACKND": "x", "RAG_LLM_BACKEND": "x", "rag_retrieval__kk": "3", "RAG_HOME": "/tmp",
           "RAG_DEBUG": "1", "RAG_COLOUR": "red", "PATH": "/bin", "RAG_UI__PORT": "1"}
    assert unknown_variables(env) == [
        ("RAG_COLOUR", None), ("RAG_LLM_BACKEND", "RAG_LLM__BACKEND"), ("RAG_LLM__BACKND", "RAG_LLM__BACKEND"),
        ("rag_retrieval__kk", "RAG_RETRIEVAL__K")]
    with pytest.raises(InputError, match=r"RAG_COLOUR; RAG_LLM_BACKEND \(did you mean RAG_LLM__BACKEND\?\)"):
        check_environment(env)
    check_environment({"RAG_HOME": "/tmp", "RAG_ANSWER__VERIFY": "off"})  # every real one passes


def test_every_field_has_its_variable() -> None:
    names = variable_names()
    assert names["RAG_LLM__BACKEND"] == "llm.backend" and names["RAG_HOME"] == "home"
    assert len(names) == 1 + len(GROUPS) + sum(len(Settings.model_fields[g].annotation.model_fields)  # type: ignore[union-attr]
                                               for g in GROUPS)


def test_the_cli_reports_a_mistyped_variable_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([str(BIN / "rag"), "stats"], capture_output=True, text=True, timeout=60,
                          env={"PATH": str(BIN), "RAG_HOME": str(tmp_path), "RAG_LLM__BACKND": "ollama",
                               "COLUMNS": "300"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "error: RAG_LLM__BACKND (did you mean RAG_LLM__BACKEND?): no such setting", proc.stderr
    assert lines[1].strip().startswith("fix: rename or unset it") and len(lines) == 2
    assert "Traceback" not in proc.stderr


def test_a_config_file_typo_names_the_nearest_field(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"llm": {"backnd": "extractive"}}))
    with pytest.raises(InputError, match=r"unknown setting 'llm.backnd' \(did you mean 'llm.backend'\?\)"):
        load_settings(config, base=Settings())


def test_every_backend_name_has_a_backend_or_a_rule() -> None:
    """Every name the registry lists is a backend `make_backend` builds, except ``auto`` (a rule), and
    ``llm.backend`` accepts each; an unknown name is refused naming the nearest one."""
    from rag.llm import backend_names, make_backend

    names = backend_names()
    assert names[:5] == ("auto", "ollama", "openai", "llamacpp", "extractive")
    for name in names[1:]:
        assert make_backend(name, LLMSettings()).name == name
        assert Settings(llm={"backend": name}).llm.backend == name
    with pytest.raises(ValidationError, match=r"unknown LLM backend 'llama' \(did you mean 'ollama'\?\)"):
        LLMSettings(backend="llama")


def test_each_backend_owns_its_settings_block() -> None:
    """`LLMSettings` joins the fields every backend reads and each built-in backend's own block, under the
    names (and so the RAG_LLM__* variables) they always had."""
    from rag.backends.base import LLMCommon
    from rag.backends.llamacpp import LlamaCppSettings
    from rag.backends.ollama import OllamaSettings
    from rag.backends.openai_compat import OpenAISettings

    blocks = [OllamaSettings, OpenAISettings, LlamaCppSettings]
    own = [set(b.model_fields) - set(LLMCommon.model_fields) for b in blocks]
    assert own[0] == {"ollama_url", "ollama_model", "num_ctx", "keep_alive"}
    assert set(LLMSettings.model_fields) == set(LLMCommon.model_fields).union(*own)
    assert not own[0] & own[1] and not own[1] & own[2] and not own[0] & own[2]
    assert variable_names()["RAG_LLM__NUM_CTX"] == "llm.num_ctx"
