"""A stand-in Ollama server for tests: stdlib ``http.server`` in a thread, speaking Ollama's
documented wire format (https://github.com/ollama/ollama/blob/main/docs/api.md).

- ``GET /api/version`` -> ``{"version": ...}``
- ``GET /api/tags`` -> ``{"models": [{"name": "qwen2.5-coder:1.5b", "model": "qwen2.5-coder:1.5b", ...}]}``
- ``POST /api/chat`` -> with ``"stream": true`` (Ollama's default) chunked NDJSON, one
  ``{"model", "created_at", "message": {"role": "assistant", "content"}, "done": false}`` per
  piece of the reply, then ``{"done": true, "done_reason": "stop"|"length", "total_duration",
  "eval_count", ...}``; with ``"stream": false`` one object with the whole reply.
- ``GET /v1/models``, ``POST /v1/chat/completions``: Ollama's OpenAI-compatible endpoints
  (server-sent events ending with ``data: [DONE]``), so the ``openai`` backend's error mapping
  can be tested against the same faults.
- errors as Ollama sends them: ``{"error": "..."}`` with the status (404 for a model that is
  not pulled, ``{"error": {"message": ...}}`` on ``/v1``), ``404 page not found`` for unknown paths.

Faults are chosen with ``behaviour`` (it applies to the chat endpoints only):

=================  ==========================================================================
``ok``             answer normally (a model not in ``models`` still gets Ollama's 404)
``busy``           503 ``{"error": "server busy, please try again. ..."}``
``internal``       500 ``{"error": "llama runner process has terminated: signal: killed"}``
``slow``           wait ``delay_s`` before sending anything
``error_midstream`` ``fail_after`` pieces, then ``{"error": "..."}`` as the next NDJSON line
``drop_midstream``  ``fail_after`` pieces, then close the socket inside the chunked body
``stall_midstream`` ``fail_after`` pieces, then wait ``delay_s``
=================  ==========================================================================

Every request is recorded in ``requests`` (method, path, parsed JSON body) so tests can assert
what a client sent, e.g. ``options.num_ctx``.

The reply is the fixed string ``reply`` (split into words), except for a request with ``format``
(structured output), which gets ``verdict`` as the JSON value the schema asks for. With
``generate`` set, replies are generated for real instead: ``llama_generator()`` runs a GGUF (the
bundled Qwen2.5-Coder by default, the model Ollama serves as ``qwen2.5-coder:1.5b``) through
llama.cpp, honouring ``num_predict``, ``temperature``, ``seed``, ``stop`` and ``format`` (a JSON
schema, enforced by a grammar as Ollama does), so ``rag eval run --backend ollama`` measures the
Ollama code path on real text:

    python -m tests.ollama_standin --port 11434 --generate     # then RAG_LLM__BACKEND=ollama

What this leaves out: ``/api/generate``, ``/api/pull`` and the other model-management endpoints,
and ``num_ctx`` (the generator's context is fixed when it loads).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BEHAVIOURS = ("ok", "busy", "internal", "slow", "error_midstream", "drop_midstream", "stall_midstream")
MIDSTREAM_ERROR = "an error was encountered while running the model: unexpected EOF"


@dataclass
class Recorded:
    method: str
    path: str
    body: Any  # parsed JSON, or None


def _model_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class OllamaStandIn:
    models: list[str] = field(default_factory=lambda: ["qwen2.5-coder:1.5b"])
    reply: str = "Transformers use self-attention [1]. They scale well [2]."
    behaviour: str = "ok"
    delay_s: float = 5.0
    fail_after: int = 3
    version: str = "0.12.6"
    verdict: str = "yes"  # the reply to a structured-output (``format``) request
    # (messages, options, format) -> text pieces; None: the fixed ``reply``
    generate: Callable[[list[dict[str, Any]], dict[str, Any], Any], Iterator[str]] | None = None
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {self.behaviour!r}")
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> OllamaStandIn:
        standin = self

        class Handler(_Handler):
            server_state = standin

        self._server = _Server(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> OllamaStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests
    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path in ("/api/chat", "/v1/chat/completions")]

    def pieces(self) -> list[str]:
        """The reply as streamed: words with their following whitespace."""
        return re.findall(r"\S+\s*", self.reply)

    def wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (timeout tests do) is expected; anything else is reported."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: OllamaStandIn

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # ------------------------------------------------------------------ plumbing
    def _record(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.server_state.requests.append(Recorded(self.command, self.path, body))
        return body

    def _send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_chunked(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        """Close the connection in the middle of the chunked body, as a crashed server would."""
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._record()
        s = self.server_state
        if self.path == "/api/version":
            self._send_json(200, {"version": s.version})
        elif self.path == "/api/tags":
            self._send_json(200, {"models": [_tag(m) for m in s.models]})
        elif self.path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 1730000000, "owned_by": "library"} for m in s.models]
            self._send_json(200, {"object": "list", "data": data})
        elif self.path == "/":
            self._send_text(200, "Ollama is running")
        else:
            self._send_text(404, "404 page not found")

    def do_HEAD(self) -> None:  # noqa: N802
        self._send_text(200, "")

    def do_POST(self) -> None:  # noqa: N802
        body = self._record() or {}
        if self.path == "/api/chat":
            self._chat(body, openai=False)
        elif self.path == "/v1/chat/completions":
            self._chat(body, openai=True)
        else:
            self._send_text(404, "404 page not found")

    def _error(self, status: int, message: str, openai: bool) -> None:
        if openai:
            self._send_json(status, {"error": {"message": message, "type": "api_error", "param": None, "code": None}})
        else:
            self._send_json(status, {"error": message})

    def _chat(self, body: dict[str, Any], *, openai: bool) -> None:
        s = self.server_state
        requested = str(body.get("model", ""))
        if not requested:
            return self._error(400, "model is required", openai)
        if _model_name(requested) not in {_model_name(m) for m in s.models}:
            return self._error(404, f'model "{requested}" not found, try pulling it first', openai)
        if s.behaviour == "busy":
            return self._error(503, "server busy, please try again.  maximum pending requests exceeded", openai)
        if s.behaviour == "internal":
            return self._error(500, "llama runner process has terminated: signal: killed", openai)
        if s.behaviour == "slow":
            s.wait(s.delay_s)

        if openai:
            limit = body.get("max_tokens") or body.get("max_completion_tokens")
        else:
            limit = (body.get("options") or {}).get("num_predict")
        done_reason = "stop"
        if s.generate is not None:
            options = dict(body.get("options") or {})
            if openai:
                options = {"num_predict": limit, "temperature": body.get("temperature"), "seed": body.get("seed"),
                           "stop": body.get("stop")}
            pieces = list(s.generate(body.get("messages") or [], options, body.get("format")))
        elif body.get("format") is not None:
            pieces = [json.dumps(s.verdict)]
        else:
            pieces = s.pieces()
        if isinstance(limit, int) and 0 <= limit < len(pieces):
            pieces, done_reason = pieces[:limit], "length"

        if openai:
            return self._chat_openai(requested, pieces, done_reason, bool(body.get("stream")))
        if body.get("stream", True) is False:
            return self._send_json(200, {**_message(requested, "".join(pieces)), **_final(done_reason, len(pieces))})

        self._start_chunked("application/x-ndjson")
        for i, piece in enumerate(pieces):
            if i == s.fail_after and self._fault():
                return
            self._chunk((json.dumps({**_message(requested, piece), "done": False}) + "\n").encode())
            time.sleep(0.001)
        final = {**_message(requested, ""), **_final(done_reason, len(pieces))}
        self._chunk((json.dumps(final) + "\n").encode())
        self._end_chunked()

    def _fault(self, openai: bool = False) -> bool:
        """Apply a mid-stream fault; True when the response is over."""
        s = self.server_state
        if s.behaviour == "error_midstream":
            if openai:
                line = f"data: {json.dumps({'error': {'message': MIDSTREAM_ERROR, 'type': 'api_error'}})}\n\n"
            else:
                line = json.dumps({"error": MIDSTREAM_ERROR}) + "\n"
            self._chunk(line.encode())
            self._end_chunked()
            return True
        if s.behaviour == "drop_midstream":
            self._drop()
            return True
        if s.behaviour == "stall_midstream":
            s.wait(s.delay_s)
        return False

    def _chat_openai(self, model: str, pieces: list[str], done_reason: str, stream: bool) -> None:
        created = int(time.time())
        base = {"id": "chatcmpl-1", "created": created, "model": model, "system_fingerprint": "fp_ollama"}
        if not stream:
            message = {"role": "assistant", "content": "".join(pieces)}
            return self._send_json(200, {
                **base, "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": done_reason}],
                "usage": {"prompt_tokens": 26, "completion_tokens": len(pieces), "total_tokens": 26 + len(pieces)},
            })
        self._start_chunked("text/event-stream")
        for i, piece in enumerate(pieces):
            if i == self.server_state.fail_after and self._fault(openai=True):
                return
            delta = {"role": "assistant", "content": piece}
            event = {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            self._chunk(f"data: {json.dumps(event)}\n\n".encode())
        last = {**base, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": done_reason}]}
        self._chunk(f"data: {json.dumps(last)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self._end_chunked()


def _tag(name: str) -> dict[str, Any]:
    return {
        "name": name, "model": name, "modified_at": "2025-10-01T12:00:00.000000000Z", "size": 2019393189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                    "parameter_size": "3.2B", "quantization_level": "Q4_K_M"},
    }


def _message(model: str, content: str) -> dict[str, Any]:
    return {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": content}}


def _final(done_reason: str, eval_count: int) -> dict[str, Any]:
    return {"done": True, "done_reason": done_reason, "total_duration": 4883583458, "load_duration": 1334875,
            "prompt_eval_count": 26, "prompt_eval_duration": 342546000, "eval_count": eval_count,
            "eval_duration": 4535599000}


def llama_generator(model: str = "qwen2.5-coder-1.5b") -> Callable[..., Iterator[str]]:
    """Real generation for the stand-in: a bundled model name or GGUF path run by llama.cpp
    (one generation at a time, as a single Ollama runner does)."""
    from rag.llm import LlamaCppBackend
    from rag.settings import LLMSettings

    backend = LlamaCppBackend(LLMSettings(model=model, context_window=8192))
    llama, lock = backend._loaded()

    def generate(messages: list[dict[str, Any]], options: dict[str, Any], schema: Any) -> Iterator[str]:
        kwargs: dict[str, Any] = {
            "max_tokens": options.get("num_predict") or 256, "temperature": options.get("temperature") or 0.0,
            "seed": options.get("seed"), "stop": options.get("stop") or None}
        if isinstance(schema, dict):
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        elif schema == "json":
            kwargs["response_format"] = {"type": "json_object"}
        with lock:
            for chunk in llama.create_chat_completion(messages=messages, stream=True, **kwargs):
                text = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
                if text:
                    yield text

    return generate


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="A stand-in Ollama server on loopback (Ollama's wire format).")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--model", default="qwen2.5-coder:1.5b", help="the model name it serves")
    parser.add_argument("--generate", nargs="?", const="qwen2.5-coder-1.5b", default=None,
                        help="generate with llama.cpp: a bundled model name or GGUF path (default: the bundled Qwen)")
    args = parser.parse_args(argv)
    server = OllamaStandIn(models=[args.model], generate=llama_generator(args.generate) if args.generate else None)
    server.start(args.port)
    print(f"Ollama stand-in on {server.url} serving {args.model}"
          f"{' (generating with ' + args.generate + ')' if args.generate else ''}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server._stopping.wait()
    server.stop()

if __name__ == "__main__":
    main()
