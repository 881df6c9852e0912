"""``rag api``: an OpenAI-compatible HTTP API over the library (FastAPI), for chat front-ends and scripts.

Routes (all under ``/v1``, a bearer token required whenever ``RAG_API__TOKEN`` is set):

- ``POST /chat/completions``: OpenAI's chat-completions shape, streamed as server-sent events
  (``data: [DONE]`` last) or not. The last message is the question, the earlier ones its history
  (`ui.service.PaperService.replay`: condensed as in ``rag chat``); a message asking for a table
  ("make a table of ...") gets the table in Markdown (`ui.chat_table`). The text keeps its ``[n]``
  markers and, unless ``RAG_API__MARKDOWN_SOURCES=false``, ends with a Markdown list of the cited
  papers; ``citations`` on the response (on the last chunk when streaming) holds the items of
  ``rag ask --json`` plus ``url`` and ``supported``; ``paper_rag`` says which backend answered,
  whether it abstained, and the checked answer text. ``temperature`` and ``max_tokens`` (or
  ``max_completion_tokens``, which only lowers the configured bound) are used; ``k`` (papers
  retrieved, 1 to ``RAG_RETRIEVAL__MAX_K``) is an extension; all of them are checked once, as in every
  interface, by `rag.answer.request.AskRequest`; other OpenAI fields are accepted and ignored; wrong types are 400.
- ``POST /table``: an extraction table (``{query?, papers?, columns?, questions?, k?, year?, author?,
  category?, overview?}``), the object ``rag table --json`` prints (`ui.service.PaperService.table`).
- ``GET /models``, ``GET /models/{id}``, ``POST /search``, ``GET /papers/{id}``, ``GET /papers/{id}/bibtex``,
  ``GET /papers/{id}/similar?k=5&year=&author=&category=`` (nearest papers by stored vectors).
- ``GET /health`` (no token): liveness only.

A browser page on another origin (not listed in ``RAG_UI__ALLOWED_ORIGINS``) gets 403 for anything
but a GET (`ui.guard.OriginPolicy`): it cannot make a user's browser spend answers or search.

Errors are OpenAI error objects ``{"error": {"message", "type", "param", "code"}}``: 400 bad
request (malformed JSON, wrong types or roles, no messages), 401 missing or wrong token, 404
unknown model, paper or route, 413 body over ``RAG_API__MAX_BODY_MB`` or a question over
``rag.answer.answerer.MAX_QUESTION_CHARS``, 429 every answer slot taken (``RAG_UI__CONCURRENCY``), 503
backend or index unavailable, 500 anything else (logged here, never a traceback in the body).
Left out: the answering itself (`rag.answer.answerer`, `rag.chat`), ``/v1/completions`` and embeddings,
tools, ``n`` > 1, the web chat that ``rag serve`` mounts beside these routes (`ui.server.combined_app`).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.answer.answer_result import Answer, Event
from rag.answer.answerer import Answerer
from rag.errors import BackendError, EmptyIndexError, InputError, RagError, UnknownModelError, outcome
from rag.llm import approx_tokens
from rag.markup import md_prose
from rag.render.json import answer_summary
from rag.render.markdown import answer_message, sources_markdown
from rag.render.view import AnswerView
from rag.settings import Settings
from ui.chat_table import api_table, table_reply
from ui.guard import LOOPBACK_NAMES, CorsGate, OriginPolicy
from ui.service import (
    DEFAULT_MODEL,
    AnswerStream,
    ChatMessage,
    PaperService,
    error_object,
)
from ui.shared import AnswererPool

log = logging.getLogger("paper_rag.api")


# ------------------------------------------------------------------ request bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # unknown fields accepted, types not coerced


class ContentPart(_Body):
    type: str
    text: str | None = None


class InMessage(_Body):
    role: str
    content: str | list[ContentPart] | None = None

    def text(self, index: int) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(p.type != "text" for p in self.content):
            raise InputError(f"messages[{index}].content holds a non-text part", "send text only",
                             param=f"messages.{index}.content")
        return "\n".join(p.text or "" for p in self.content)


class StreamOptions(_Body):
    include_usage: bool = False


class ChatRequest(_Body):
    model: str = DEFAULT_MODEL
    messages: list[InMessage]
    stream: bool | None = False
    # its bounds, k's and max_tokens': rag.answer.request.AskRequest (from the settings)
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = Field(None, ge=1)
    stream_options: StreamOptions | None = None
    k: int | None = Field(None, description="paper-rag: papers retrieved for the answer (1 to RAG_RETRIEVAL__MAX_K)")


class SearchRequest(_Body):
    query: str
    k: int | None = None  # 1 to RAG_RETRIEVAL__MAX_K (`ui.service.PaperService.search`)
    year: str | int | None = None
    author: str | None = None
    category: str | None = None


class TableRequest(_Body):
    query: str | None = None
    papers: list[str] = Field(default_factory=list, description="paper ids, exact titles, arXiv ids or DOIs")
    columns: list[str] | None = Field(None, description="built-in columns: task, method, data, result, model_size, "
                                                        "code (default task, method, data, result)")
    questions: list[str] = Field(default_factory=list, description="columns of your own, as questions")
    k: int | None = Field(None, ge=1, le=50)
    year: str | int | None = None
    author: str | None = None
    category: str | None = None
    overview: str = "cells"


# ------------------------------------------------------------------ errors


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_rag_error(err: RagError) -> APIError:
    """A library error as its HTTP status and OpenAI error object (`rag.errors.outcome`, `ui.service.error_object`)."""
    row, body = outcome(err), error_object(err)
    headers = {"Retry-After": str(row.retry_after)} if row.retry_after else None
    return APIError(row.status, body["message"], body["type"], param=body["param"], code=body["code"], headers=headers)


def from_validation(err: ValidationError) -> APIError:
    first = err.errors()[0]
    if first["type"] == "json_invalid":
        return APIError(400, f"the request body is not valid JSON: {first['msg']}", code="invalid_json")
    loc = first["loc"][1:] if first["loc"] and first["loc"][0] in ("query", "path") else first["loc"]
    param = ".".join(str(p) for p in loc) or None
    code = "missing_required_parameter" if first["type"] == "missing" else \
        "invalid_type" if first["type"].endswith("_type") else "invalid_value"
    return APIError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param, code=code)


# ------------------------------------------------------------------ the app


def create_app(settings: Settings, answerer: Answerer | None = None, service: PaperService | None = None) -> FastAPI:
    """The API app. ``answerer`` replaces the configured default (tests pass one with a scripted backend)."""
    if service is None:
        service = PaperService(settings, pool=AnswererPool(settings, answerer=answerer) if answerer else None)
    limit = int(settings.api.max_body_mb * 1024 * 1024)
    token = settings.api.token
    origins = OriginPolicy.of(settings.ui.allowed_origins)
    app = FastAPI(title="paper-rag", summary="Cited answers over research-paper abstracts (OpenAI-compatible).",
                  version="1", docs_url=None, redoc_url=None)
    app.state.service = service

    @app.exception_handler(APIError)
    async def api_error(_: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(RagError)
    async def rag_error(_: Request, err: RagError) -> JSONResponse:
        return from_rag_error(err).response()

    @app.exception_handler(RequestValidationError)
    async def bad_params(_: Request, err: RequestValidationError) -> JSONResponse:  # query parameters (?k=abc)
        return from_validation(err).response()  # type: ignore[arg-type]

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = f"no route {request.method} {request.url.path}" if err.status_code in (404, 405) else str(err.detail)
        return APIError(err.status_code, message, code="unknown_url" if err.status_code == 404 else None).response()

    @app.exception_handler(Exception)
    async def crash(request: Request, err: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return APIError(500, f"internal error ({type(err).__name__}); the server log has the details",
                        "server_error", code="internal_error").response()

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Any]) -> Any:
        """Another page's origin (CSRF), the token (on /v1), then the declared body size, before any route
        reads anything."""
        if origins.refusal(request.scope):
            return APIError(403, f"requests from the web page at {request.headers.get('origin')!r} are not allowed "
                            "(fix: call the API from a program, or add that origin to RAG_UI__ALLOWED_ORIGINS)",
                            code="origin_not_allowed").response()
        if request.url.path.startswith("/v1") and token:
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if not given:
                return APIError(401, "no API key: send the header 'Authorization: Bearer TOKEN' (RAG_API__TOKEN)",
                                code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}).response()
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
                return APIError(401, "incorrect API key (the server's RAG_API__TOKEN)", code="invalid_api_key",
                                headers={"WWW-Authenticate": "Bearer"}).response()
        length = request.headers.get("content-length")  # /v1 only: uploads to a mounted web chat have their own
        if request.url.path.startswith("/v1") and length and length.isdigit() and int(length) > limit:
            return too_large(int(length)).response()
        return await call_next(request)

    def too_large(size: int | None = None) -> APIError:
        got = f" ({size:,} bytes)" if size else ""
        return APIError(413, f"the request body is too large{got}; the limit is {limit:,} bytes (RAG_API__MAX_BODY_MB)",
                        code="request_too_large")

    async def read_body(request: Request, model: type[BaseModel]) -> Any:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large()
        try:
            return model.model_validate_json(bytes(body) or b"null")
        except ValidationError as err:
            raise from_validation(err) from None

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(name) for name in service.models()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> dict[str, Any]:
        if name not in service.models():
            raise UnknownModelError(f"the model {name!r} does not exist", "GET /v1/models lists the names to use")
        return model_card(name)

    @app.post("/v1/search")
    async def search(request: Request) -> dict[str, Any]:
        body: SearchRequest = await read_body(request, SearchRequest)
        return await run_in_threadpool(service.search, body.query, body.k, body.year, body.author, body.category)

    @app.post("/v1/table")
    async def table(request: Request) -> dict[str, Any]:
        body: TableRequest = await read_body(request, TableRequest)
        table = await run_in_threadpool(service.table, body.query, body.papers, body.columns, body.questions, body.k,
                                        body.year, body.author, body.category, body.overview)
        return table.as_dict()

    @app.get("/v1/papers/{paper_id:path}/similar")
    async def paper_similar(paper_id: str, k: int | None = None, year: str | None = None, author: str | None = None,
                            category: str | None = None) -> dict[str, Any]:
        return await run_in_threadpool(service.similar, paper_id, k, year, author, category)

    @app.get("/v1/papers/{paper_id:path}/bibtex")
    async def paper_bibtex(paper_id: str) -> PlainTextResponse:
        text = await run_in_threadpool(service.bibtex, [paper_id])
        return PlainTextResponse(text, media_type="application/x-bibtex; charset=utf-8")

    @app.get("/v1/papers/{paper_id:path}")
    async def paper(paper_id: str) -> dict[str, Any]:
        return service.paper_dict(await run_in_threadpool(service.paper, paper_id))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body: ChatRequest = await read_body(request, ChatRequest)
        if body.n not in (None, 1):
            raise APIError(400, f"n={body.n}: only one choice is generated", param="n", code="invalid_value")
        messages = [ChatMessage(m.role, m.text(i)) for i, m in enumerate(body.messages)]
        ask = await run_in_threadpool(service.request, messages, body.model, k=body.k, temperature=body.temperature,
                                      max_tokens=body.max_completion_tokens or body.max_tokens)
        usage = bool(body.stream_options and body.stream_options.include_usage)
        if (turn := await run_in_threadpool(api_table, service, ask)) is not None:
            reply = Reply(service, body.model, settings.api.markdown_sources, "", messages)
            text, extras = table_reply(turn, settings.api.markdown_sources)
            if body.stream:
                return event_stream(iter([sse_line(c) for c in reply.message_chunks(text, extras, usage)]
                                         + [SSE_DONE]))
            return reply.message(text, extras)
        events = await run_in_threadpool(service.stream, ask)
        reply = Reply(service, body.model, settings.api.markdown_sources, ask.question, messages)
        if body.stream:
            return event_stream(sse(reply.chunks(events, usage), events, request))
        try:
            answer = await unless_gone(request, drain, events)
        except ClientGone:
            return Response(status_code=499)  # nobody reads it: the client closed the connection
        finally:
            events.cancel()  # a no-op when the answer ended; else the slot back now
        return reply.completion(answer)

    return app


def model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "paper-rag"}


def drain(events: Iterator[Event]) -> Answer:
    answer = None
    for event in events:
        answer = event.answer or answer
    assert answer is not None
    if answer.incomplete and not answer.answer.strip():
        raise BackendError(answer.error or "the answer backend failed before writing anything",
                           "check the backend (GET /v1/models, the server log) and retry")
    return answer


class ClientGone(Exception):
    """The client closed its connection while its answer was being made."""


async def unless_gone(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker thread, or `ClientGone` as soon as the client disconnects (the request's
    body must be read already); the thread is then abandoned, to notice the cancelled stream by itself."""
    result: list[Any] = []
    failed: list[BaseException] = []
    async with anyio.create_task_group() as group:
        async def work() -> None:
            try:
                result.append(await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True))
            except Exception as err:  # noqa: BLE001 - raised below as itself, not in an ExceptionGroup
                failed.append(err)
            group.cancel_scope.cancel()

        async def watch() -> None:  # the body is read: the next message is the disconnect
            while (await request.receive())["type"] != "http.disconnect":
                await anyio.sleep(0)
            group.cancel_scope.cancel()

        group.start_soon(work)
        group.start_soon(watch)
    if failed:
        raise failed[0]
    if not result:
        raise ClientGone
    return result[0]


def _close(chunks: Iterator[Any]) -> None:
    with contextlib.suppress(ValueError):  # still running in an abandoned thread: it ends with its cancelled events
        chunks.close()  # type: ignore[attr-defined]


SSE_DONE = b"data: [DONE]\n\n"  # the last event of every stream


def sse_line(chunk: dict[str, Any]) -> bytes:
    """One chunk as a server-sent event."""
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()


def event_stream(lines: Iterator[bytes] | AsyncIterator[bytes]) -> StreamingResponse:
    """The response that streams ``lines`` as server-sent events, unbuffered by proxies."""
    return StreamingResponse(lines, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def sse(chunks: Iterator[dict[str, Any]], events: AnswerStream, request: Request) -> AsyncIterator[bytes]:
    """Server-sent events from a blocking iterator run in worker threads. However it ends (the client
    may go away before the first chunk, or while the model is thinking), the answer slot is given
    back at once (`AnswerStream.cancel`) and the generation stops at its next token."""
    done = object()
    try:
        while (chunk := await unless_gone(request, next, chunks, done)) is not done:
            yield sse_line(chunk)
        yield SSE_DONE
    except ClientGone:
        return
    finally:
        events.cancel()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_close, chunks)


class Reply:
    """One chat completion, shaped as OpenAI's response object or its stream of chunks."""

    def __init__(self, service: PaperService, model: str, markdown: bool, question: str,
                 messages: list[ChatMessage]) -> None:
        self.service, self.model, self.markdown = service, model, markdown
        self.id = f"chatcmpl-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.prompt_tokens = sum(approx_tokens(m.content) for m in messages) or approx_tokens(question)

    def extras(self, answer: Answer) -> dict[str, Any]:
        info = answer_summary(answer, self.service.settings.answer.support_threshold)
        return {"citations": info.pop("citations"), "paper_rag": info}

    def usage(self, text: str) -> dict[str, int]:
        completion = approx_tokens(text)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}

    def completion(self, answer: Answer) -> dict[str, Any]:
        return self.message(answer_message(answer, self.markdown), self.extras(answer))

    def message(self, text: str, extras: dict[str, Any]) -> dict[str, Any]:
        """The whole completion: ``text`` as the assistant's message, ``extras`` beside it."""
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": self.usage(text), "system_fingerprint": None, **extras}

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}

    def usage_chunk(self, text: str) -> dict[str, Any]:
        """The chunk after the last, with no choices: the usage of the streamed ``text``."""
        return {**self.chunk({}, None, usage=self.usage(text)), "choices": []}

    def message_chunks(self, text: str, extras: dict[str, Any], include_usage: bool = False) -> list[dict[str, Any]]:
        """A completion known whole before it is sent (a table), as the chunks of a stream."""
        chunks = [self.chunk({"role": "assistant", "content": ""}), self.chunk({"content": text}),
                  self.chunk({}, "stop", **extras)]
        return chunks + ([self.usage_chunk(text)] if include_usage else [])

    def chunks(self, events: AnswerStream, include_usage: bool = False) -> Iterator[dict[str, Any]]:
        """Role, text deltas as they stream, then what the checks add (the checked answer when it
        differs from what streamed, the source list), then the last chunk with ``citations``."""
        streamed = ""
        try:
            yield self.chunk({"role": "assistant", "content": ""})
            answer = None
            for event in events:
                if event.kind == "token" and event.text:
                    streamed += event.text
                    yield self.chunk({"content": md_prose(event.text)})  # per character: safe piece by piece
                elif event.kind == "done":
                    answer = event.answer
            if answer is None and events.cancelled:  # the client went away: nobody reads the rest
                return
            assert answer is not None
            if answer.incomplete and not streamed.strip():
                yield from_rag_error(BackendError(answer.error or "the answer backend failed before writing anything",
                                                  "check the backend and retry")).body()
                return
            tail = ""
            checked = answer_message(answer, self.markdown, sources=False)
            if answer.answer.strip() != streamed.strip() or AnswerView.of(answer).flagged:
                tail += f"\n\n*Checked answer:* {checked}" if self.markdown else f"\n\nChecked answer: {checked}"
            sources = sources_markdown(answer) if self.markdown else ""
            tail += f"\n\n{sources}" if sources else ""
            if tail:
                streamed += tail
                yield self.chunk({"content": tail})
            yield self.chunk({}, "stop", **self.extras(answer))
            if include_usage:
                yield self.usage_chunk(streamed)
        except RagError as err:  # after the headers went out: an error event, as OpenAI streams them
            yield from_rag_error(err).body()
        except Exception as err:  # noqa: BLE001 - never a traceback to the client
            log.exception("streaming an answer failed")
            yield APIError(500, f"internal error ({type(err).__name__})", "server_error", code="internal_error").body()
        finally:
            events.close()


# ------------------------------------------------------------------ serving


def check_exposure(host: str, token: str | None) -> None:
    if host not in LOOPBACK_NAMES and not token:
        raise InputError(f"refusing to listen on {host} without a token: anyone who reaches it could use the API",
                         "set RAG_API__TOKEN to a long random string (clients send 'Authorization: Bearer TOKEN'), "
                         "or keep the default host 127.0.0.1")


def serve(settings: Settings, host: str | None = None, port: int | None = None,
          echo: Callable[[str], None] = print) -> None:
    """Blocks until stopped (Ctrl-C): checks exposure, warms the models, then runs uvicorn."""
    import uvicorn

    from rag.ingest.ingestor import stats as index_stats

    host = host or settings.api.host
    port = port or settings.api.port
    check_exposure(host, settings.api.token)
    service = PaperService(settings)
    info = index_stats(settings)
    if not info["ingested"] or not info["papers"]:
        echo(f"warning: the index at {settings.home} is empty; {EmptyIndexError.fix} "
             "(answers and searches fail with 503 until then)")
    else:
        echo(f"index: {info['papers']} papers, {info['chunks']} chunks in {settings.home}")
        echo("loading the embedding model …")
        service.pool.embedder.warm()
    try:
        _, notes = service.pool.default.backend_for(None)
    except RagError as err:  # the backend may come up later: answers are 503 until then
        notes = [f"warning: {err.user_message()}\n  answers fail with 503 until the backend answers"]
    for note in notes:
        echo(note)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    echo(f"OpenAI-compatible API: http://{shown}:{port}/v1{' (token required)' if settings.api.token else ''}"
         "  — Ctrl-C to stop")
    app = CorsGate(create_app(settings, service=service), OriginPolicy.of(settings.ui.allowed_origins))
    uvicorn.run(app, host=host, port=port, log_level="warning")


__all__ = ["APIError", "check_exposure", "create_app", "serve"]
