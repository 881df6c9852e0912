"""Test doubles with the real interfaces, shipped with the package (like httpx's ``MockTransport``):
``ScriptedBackend`` is an answer backend whose replies are scripted, so the answer step, the
conversations and every interface can be tested without a model.

    >>> backend = ScriptedBackend("ZQRT is fast [1].", verdict="yes")
    >>> "".join(backend.stream([], max_tokens=8, temperature=0.0))
    'ZQRT is fast [1].'
    >>> backend.choose([], ["yes", "no"]), [call[0] for call in backend.calls]
    ('yes', ['stream', 'choose'])

``HashEmbedder`` is an `rag.index.embeddings.Embedder` whose vectors are pseudo-random unit vectors
seeded from each text's sha1 (what a chunk's ``hash`` is made of), so the store, the lexical
index and memory can be exercised at hundreds of thousands of papers without running a model.
It still cuts chunks with the real model's tokenizer, so its chunks are a real ingest's:

    >>> emb = HashEmbedder(dim=8)
    >>> a, b = emb.encode(["one text", "another"]), emb.encode(["one text"])
    >>> a.shape, bool((a[0] == b[0]).all()), round(float((a[1] ** 2).sum()), 5)
    ((2, 8), True, 1.0)

The real servers that tests and benchmarks start (``chroma run``, ``rag api``, ``rag serve``, a
llama.cpp server) are run with `running_server` / `wait_for_http` / `stop_process` on a
`free_port`, one copy for ``tests/`` and ``eval/``.

Left out: real generation (``rag.llm``). Nothing here is used by the library itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np

from rag.index.embeddings import Embedder
from rag.llm import Message, StreamInterrupted, approx_tokens, pick
from rag.settings import EmbeddingSettings

__all__ = ["HashEmbedder", "ScriptedBackend", "free_port", "hash_vector", "running_server", "stop_process",
           "wait_for_http"]


class ScriptedBackend:
    """A ``rag.llm.Backend`` that streams ``reply`` word by word.

    ``reply`` may be a function of the messages (e.g. to answer a condensation prompt differently
    from an answer prompt); ``verdict`` is what ``choose`` returns, or a function of the messages
    (to answer the answerability check and each claim's entailment check apart); ``fail_after`` raises
    ``StreamInterrupted`` after that many words, as a dropped connection would. Every call is
    recorded in ``calls`` as ``(kind, messages)``, and the citation numbers the last ``stream`` was
    allowed (its ``cite``) in ``cited``.
    """

    def __init__(self, reply: str | Callable[[list[Message]], str] = "", *,
                 verdict: str | Callable[[list[Message]], str] | None = "yes",
                 fail_after: int | None = None, name: str = "llamacpp", model: str = "scripted",
                 capable: bool = True, context_window: int = 4096, prompt_budget: int = 1400) -> None:
        self.reply, self.verdict, self.fail_after = reply, verdict, fail_after
        self.name, self.model, self.capable = name, model, capable
        self.context_window, self._budget = context_window, prompt_budget
        self.calls: list[tuple[str, list[Message]]] = []
        self.cited: list[int] = []

    @property
    def prompt_budget(self) -> int:
        return self._budget

    def describe(self) -> str:
        return f"scripted model {self.model}"

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    def check(self) -> None:
        pass

    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float,
               stop: list[str] | None = None, cite: Sequence[int] = ()) -> Iterator[str]:
        self.calls.append(("stream", list(messages)))
        self.cited = list(cite)
        reply = self.reply(list(messages)) if callable(self.reply) else self.reply
        sent = ""
        for i, word in enumerate(re.findall(r"\S+\s*", reply)):
            if self.fail_after is not None and i == self.fail_after:
                raise StreamInterrupted("connection dropped", "retry", sent)
            sent += word
            yield word

    def choose(self, messages: list[Message], options: Sequence[str]) -> str | None:
        self.calls.append(("choose", list(messages)))
        verdict = self.verdict(list(messages)) if callable(self.verdict) else self.verdict
        return pick(verdict or "", options)

    def structured(self, messages: list[Message], schema: dict[str, Any], max_tokens: int) -> str:
        """The scripted reply, whole (a function of the messages gives one reply per prompt)."""
        self.calls.append(("structured", list(messages)))
        return self.reply(list(messages)) if callable(self.reply) else self.reply


def hash_vector(text: str, dim: int) -> np.ndarray:
    """A unit-length float32 vector drawn from a generator seeded with the text's sha1."""
    seed = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


class HashEmbedder(Embedder):
    """An `Embedder` that loads no model: `hash_vector` per text, ``dim`` wide.

    ``name`` is the identity recorded in the index (default ``hash-<dim>``); a benchmark that
    wants a real reader (the real query embedder) to open the index passes the real model's name.
    Token counts, and so chunking, come from the real model's tokenizer.
    """

    def __init__(self, settings: EmbeddingSettings | None = None, *, dim: int = 384, name: str | None = None) -> None:
        super().__init__(settings)
        self._dim, self._name = dim, name

    @property
    def name(self) -> str:
        return self._name or f"hash-{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model(self) -> Any:
        raise RuntimeError("HashEmbedder has no model: it stands in for one")

    def encode(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None,
               load_onnx: bool = True) -> np.ndarray:
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = hash_vector(text, self._dim)
        self.encoded += len(texts)
        if on_batch and len(texts):
            on_batch(len(texts))
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return hash_vector(text, self._dim)


# ---------------------------------------------------------------- real servers, for tests and benchmarks


def free_port() -> int:
    """A loopback port nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Return once ``url`` answers 2xx; `RuntimeError` if ``proc`` exits first, `TimeoutError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:  # not up yet (refused, reset, 503 while loading)
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; to its whole process group when it leads one
    (started with ``start_new_session=True``), so a server's own children go too."""
    if proc.poll() is not None:
        return
    with suppress(ProcessLookupError):
        group = os.getpgid(proc.pid) == proc.pid

    def send(sig: int) -> None:
        with suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    send(signal.SIGCONT)  # a frozen (SIGSTOP) server cannot handle SIGTERM
    send(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(grace)


@contextmanager
def running_server(cmd: list[str], ready_url: str, timeout: float = 60.0,
                   **popen: Any) -> Iterator[subprocess.Popen[Any]]:
    """Start a real server process (output discarded unless ``popen`` says otherwise), wait until
    ``ready_url`` answers, stop it afterwards."""
    proc = subprocess.Popen(cmd, **{"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen})
    try:
        wait_for_http(ready_url, timeout=timeout, proc=proc)
        yield proc
    finally:
        stop_process(proc)
