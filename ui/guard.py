"""Checks in front of Gradio that Gradio itself does not make: the Host header, request size, and
a login on the routes Gradio leaves open.

`RequestGuard` is plain ASGI middleware, installed through ``app_kwargs`` (``WebApp.launch_options``)
so it runs inside Gradio's own app, whether Gradio launches it or it is mounted in another one:

- **Host** (DNS rebinding): a page on an attacker's domain whose name later resolves to 127.0.0.1
  can talk to a loopback server from the victim's browser, but its requests carry the attacker's
  name in ``Host``. Only ``localhost``, IP literals (no DNS to rebind), the bound name, this
  machine's names when bound to every interface, and ``RAG_UI__ALLOWED_HOSTS`` are answered;
  anything else gets 400.
- **Size**: a request body over ``max_bytes`` (1 MB; a question is at most 2,000 characters) is
  refused with 413 before it is read, so a 100 MB question never reaches the handler. Uploads
  (``/gradio_api/upload``) are left to Gradio's ``max_file_size``, which streams them to disk.
- **Login**: with ``RAG_UI__AUTH`` set, gradio 6.31.0 still answers ``/gradio_api/cancel``,
  ``/reset``, ``/heartbeat/{session}`` and ``/stream/...`` without a login (an unauthenticated
  cancel with a known session hash stops a logged-in user's answer). Here they need the same
  login cookie Gradio's other routes check.
- **Origin** (CSRF and cross-origin reads): a page on another origin (another port of the same
  host is another origin, and the same *site*, so SameSite=lax cookies go along) may not use
  the chat with the user's login. A request whose ``Origin`` is neither this server's own (the
  Host it was sent to) nor listed in ``RAG_UI__ALLOWED_ORIGINS`` (`OriginPolicy`) is refused
  (403; a websocket is closed) unless it is a GET or HEAD. Every event (ask, remove, upload,
  feedback export) is a POST, so it is covered. The login cookie is rewritten to
  ``SameSite=Strict``: other sites' pages do not carry it at all. Reading responses across
  origins is `CorsGate`'s: it wraps the whole app, outside Gradio's own CORS middleware.

Left out: TLS, rate limits, and the API's token (`ui.api` has its own; it uses `OriginPolicy` too).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
SHARE_DOMAIN = "*.gradio.live"  # where `--share` links point
OPEN_ROUTES = ("/gradio_api/cancel", "/gradio_api/reset", "/gradio_api/heartbeat/", "/gradio_api/stream/")
UPLOAD_ROUTE = "/gradio_api/upload"
MAX_REQUEST_BYTES = 1 << 20


def host_name(header: str) -> str:
    """The name in a Host header, lower-case, without port or IPv6 brackets.

    >>> host_name("Example.org:7860"), host_name("[::1]:7860"), host_name("127.0.0.1")
    ('example.org', '::1', '127.0.0.1')
    """
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    if header.count(":") == 1:
        return header.split(":", 1)[0]
    return header


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostPolicy:
    """Which Host names the server answers; ``*.example.org`` entries match any subdomain."""

    names: frozenset[str]

    @classmethod
    def for_bind(cls, bound: str, allowed: Iterable[str] = (), share: bool = False) -> HostPolicy:
        """Loopback names, the bound name, this machine's names when bound to every interface,
        ``allowed`` (RAG_UI__ALLOWED_HOSTS) and, with ``share``, Gradio's share domain."""
        names = set(LOOPBACK_NAMES) | {host_name(a) for a in allowed if a.strip()}
        if bound in WILDCARD_BINDS:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        else:
            names.add(host_name(bound))
        if share:
            names.add(SHARE_DOMAIN)
        return cls(frozenset(names))

    def allows(self, header: str | None) -> bool:
        if not header:
            return False
        name = host_name(header)
        if name in self.names or is_ip(name):
            return True
        return any(n.startswith("*.") and name.endswith(n[1:]) for n in self.names)


SAFE_METHODS = frozenset({"GET", "HEAD"})


def same_origin(origin: str, host: str | None) -> bool:
    """Whether ``origin`` (a page's ``scheme://host[:port]``) is the server the request was sent to.

    >>> same_origin("http://127.0.0.1:7860", "127.0.0.1:7860"), same_origin("http://127.0.0.1:5555", "127.0.0.1:7860")
    (True, False)
    """
    scheme, sep, netloc = origin.strip().lower().rstrip("/").partition("://")
    return bool(sep and scheme in ("http", "https") and host and netloc == host.strip().lower())


@dataclass(frozen=True)
class OriginPolicy:
    """Which browser origins may call the server: its own (the ``Host`` the request was sent to) and
    ``RAG_UI__ALLOWED_ORIGINS``. A request without ``Origin`` is no browser's cross-origin call."""

    allowed: frozenset[str] = frozenset()

    @classmethod
    def of(cls, allowed: Iterable[str] = ()) -> OriginPolicy:
        return cls(frozenset(a.strip().lower().rstrip("/") for a in allowed if a.strip()))

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a request with these headers may change something (and read the answer).

        >>> policy = OriginPolicy.of(["https://chat.example.org"])
        >>> policy.allows(None, "127.0.0.1:7860"), policy.allows("http://127.0.0.1:7860", "127.0.0.1:7860")
        (True, True)
        >>> policy.allows("http://127.0.0.1:5555", "127.0.0.1:7860"), policy.allows("null", "127.0.0.1:7860")
        (False, False)
        >>> policy.allows("https://chat.example.org", "127.0.0.1:7860")
        True
        """
        return origin is None or self.listed(origin) or same_origin(origin, host)

    def listed(self, origin: str) -> bool:
        return origin.strip().lower().rstrip("/") in self.allowed

    def refusal(self, scope: Mapping[str, Any]) -> bool:
        """Whether to refuse this request: a foreign origin on anything but a GET/HEAD (or a websocket)."""
        if self.allows(_header(scope, b"origin"), _header(scope, b"host")):
            return False
        return scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS


def _header(scope: Mapping[str, Any], key: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == key:
            return v.decode("latin-1")
    return None


def logged_in(scope: Scope) -> bool:
    """Whether the request carries the login cookie of the Gradio app in ``scope['app']``.

    Reads what gradio 6.31.0's ``get_current_user`` reads (``access-token[-unsecure]-<cookie_id>``
    looked up in ``app.tokens``); an app without a login lets everyone in."""
    app = scope.get("app")
    if getattr(app, "auth", None) is None and getattr(app, "auth_dependency", None) is None:
        return True
    cookies = SimpleCookie()
    try:
        cookies.load(_header(scope, b"cookie") or "")
    except Exception:  # noqa: BLE001 - a malformed cookie header is no login
        return False
    cookie_id = getattr(app, "cookie_id", None)
    tokens = getattr(app, "tokens", {}) or {}
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        if name in cookies and tokens.get(cookies[name].value) is not None:
            return True
    return False


async def respond(send: Send, status: int, message: str, fix: str) -> None:
    """A small JSON error (``{"error": message, "fix": fix}``); never a server path."""
    body = json.dumps({"error": message, "fix": fix}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def strict_cookies(send: Send) -> Send:
    """``send`` with Gradio's login cookie set ``SameSite=Strict`` (Gradio sets ``lax``, and a page
    on another port of the same host is the same site)."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = []
            for key, value in message.get("headers", []):
                if key.lower() == b"set-cookie" and value.lower().startswith(b"access-token"):
                    kept = [p for p in value.split(b";") if not p.strip().lower().startswith(b"samesite")]
                    value = b";".join([*kept, b" SameSite=Strict"])
                headers.append((key, value))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


class CorsGate:
    """The outermost ASGI layer: cross-origin reads for the listed origins only (`OriginPolicy`).

    gradio 6.31.0's own CORS middleware lets any page on a loopback origin (another port) read a
    loopback server's responses with credentials, and any origin at all when the server is reached
    by another name. Here a listed origin gets ``Access-Control-Allow-Origin`` (with credentials)
    and its preflights answered; any other origin gets its preflight refused (403) and every
    ``access-control-allow-*`` header removed from its responses, whoever added it."""

    def __init__(self, app: Any, origins: OriginPolicy) -> None:  # an ASGI app
        self.app, self.origins = app, origins

    def __getattr__(self, name: str) -> Any:  # the wrapped app's attributes (routes, state) stay reachable
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None or same_origin(origin, _header(scope, b"host")):
            return await self.app(scope, receive, send)  # not a cross-origin request
        listed = self.origins.listed(origin)
        if scope.get("method") == "OPTIONS" and _header(scope, b"access-control-request-method"):
            if not listed:
                return await respond(send, 403, f"requests from the page at {origin!r} are not allowed",
                                     "open the chat itself, or add that origin to RAG_UI__ALLOWED_ORIGINS")
            requested = _header(scope, b"access-control-request-headers") or ""
            await send({"type": "http.response.start", "status": 204, "headers": [
                *_allow(origin), (b"access-control-allow-methods", b"GET, HEAD, POST, PUT, PATCH, DELETE"),
                (b"access-control-allow-headers", requested.encode("latin-1")), (b"access-control-max-age", b"600")]})
            return await send({"type": "http.response.body", "body": b""})

        async def cors_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if not k.lower().startswith(b"access-control-allow-")]
                message = {**message, "headers": headers + (_allow(origin) if listed else [])}
            await send(message)

        await self.app(scope, receive, cors_send)


def _allow(origin: str) -> list[tuple[bytes, bytes]]:
    return [(b"access-control-allow-origin", origin.strip().encode("latin-1")),
            (b"access-control-allow-credentials", b"true"), (b"vary", b"Origin")]


class RequestGuard:
    """ASGI middleware: Host check, Origin check, body size limit, login on Gradio's open routes."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], policy: HostPolicy,
                 max_bytes: int = MAX_REQUEST_BYTES, origins: OriginPolicy | None = None) -> None:
        self.app, self.policy, self.max_bytes = app, policy, max_bytes
        self.origins = origins or OriginPolicy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = _header(scope, b"host")
        if not self.policy.allows(host):
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await respond(send, 400, f"host {host_name(host or '')!r} is not allowed",
                                 "open the chat as http://127.0.0.1:PORT, or add the name to RAG_UI__ALLOWED_HOSTS")
        if self.origins.refusal(scope):
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await respond(send, 403, f"requests from the page at {_header(scope, b'origin')!r} are not allowed",
                                 "open the chat itself, or add that origin to RAG_UI__ALLOWED_ORIGINS")
        send = strict_cookies(send)
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(OPEN_ROUTES) and not logged_in(scope):
            return await respond(send, 401, "not logged in", "sign in on the chat page first")
        if scope["type"] == "http" and not path.startswith(UPLOAD_ROUTE):
            length = _header(scope, b"content-length")
            if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
                return await respond(send, 413, f"the request is {int(length):,} bytes (limit {self.max_bytes:,})",
                                     "ask a shorter question (at most 2,000 characters)")
            if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
                messages, size = await _read_limited(receive, self.max_bytes)
                if size > self.max_bytes:
                    return await respond(send, 413, f"the request is over {self.max_bytes:,} bytes",
                                         "ask a shorter question (at most 2,000 characters)")
                receive = _replay(messages, receive)
        return await self.app(scope, receive, send)


async def _read_limited(receive: Receive, limit: int) -> tuple[list[Message], int]:
    """Body messages of a request without Content-Length, read until its end or past ``limit`` bytes."""
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, size
        size += len(message.get("body", b""))
        if size > limit or not message.get("more_body", False):
            return messages, size


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands out ``messages`` first, then the real one (for disconnects)."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
