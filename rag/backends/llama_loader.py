"""Loading GGUF models into llama-cpp-python, once per process, and the CPU workaround that needs.

One ``Llama`` per (file, n_ctx, threads, repack, draft) per process (`load_llama`), shared by every
backend made for it, each with the lock that serialises generation on it (its KV cache is not
shareable); all are closed before interpreter shutdown. On CPUs with AMX, llama-cpp-python 0.3.36
crashes when llama.cpp repacks the bundled Q4_1 weights, so `no_extra_buffers` turns repacking
off while a model loads (llama.cpp's ``--no-repack``, which llama-cpp-python does not expose).

Left out: generation and prompts (`rag.backends.llamacpp`). ``llama_cpp`` is imported on use.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return any(line.startswith("flags") and " amx_int8" in line for line in f)
    except OSError:
        return False


@contextlib.contextmanager
def no_extra_buffers() -> Iterator[None]:
    """Load ``Llama`` models with ``use_extra_bufts=False`` (llama.cpp's ``--no-repack``).

    llama-cpp-python does not expose the flag, so the default-params factory it calls is
    wrapped while the model loads. Needed on AMX CPUs: with repacking on, 0.3.36 crashes
    in ``ggml_backend_amx_mul_mat`` at the first decode of the bundled Q4_1 model.
    """
    from llama_cpp import llama_cpp as lib

    original = lib.llama_model_default_params

    def params() -> Any:
        p = original()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = original


def maps_gguf(repack: bool) -> bool:
    """Whether llama.cpp memory-maps the GGUF (``use_mmap``): only when it does not repack.

    Repacking copies most weights (597 of the bundled Qwen's 1,060 MiB) into llama.cpp's own
    buffers, while the mapping keeps the whole file resident as well: 1.87 GB RSS after loading
    Qwen, against 1.28 GB when the file is read into memory once (`rag bench --only memory`;
    README, Performance). Without repacking, the mapped file is the weights, shared with other
    processes mapping it and dropped by the kernel under pressure, so it stays mapped.
    """
    return not repack


_LOAD_LOCK = threading.Lock()
_LLAMAS: dict[tuple[str, int, int, bool, int], tuple[Any, threading.Lock]] = {}


def _close_llamas() -> None:
    """Free loaded models before interpreter shutdown (llama-cpp-python's own __del__ runs too
    late then, and prints a TypeError traceback)."""
    for llama, _ in _LLAMAS.values():
        with contextlib.suppress(Exception):
            llama.close()
    _LLAMAS.clear()


def load_llama(path: Path, n_ctx: int, threads: int, repack: bool, draft: int = 0) -> tuple[Any, threading.Lock]:
    key = (str(path.resolve()), n_ctx, threads, repack, draft)
    with _LOAD_LOCK:
        if key not in _LLAMAS:
            from llama_cpp import Llama

            if not _LLAMAS:
                atexit.register(_close_llamas)
            extra: dict[str, Any] = {}
            if draft:
                from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

                # verifying drafted tokens needs the logits of every position: n_ctx x vocab floats
                # (2.5 GB for Qwen's 152k vocabulary at n_ctx 4096), one reason it is off by default
                extra["draft_model"] = LlamaPromptLookupDecoding(num_pred_tokens=draft)
                extra["logits_all"] = True
            with contextlib.nullcontext() if repack else no_extra_buffers():
                # threads also bounds prompt evaluation (llama-cpp-python would use every core for it);
                # use_mmap: see `maps_gguf`
                llama = Llama(model_path=key[0], n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                              use_mmap=maps_gguf(repack), verbose=False, **extra)
            _LLAMAS[key] = (llama, threading.Lock())
        return _LLAMAS[key]
