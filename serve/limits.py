"""Bounds on the HTTP layer of a request, enforced in the ingress: header bytes, body bytes, body read time, JSON.

Ray Serve's proxy (uvicorn + httptools) sets none of these: it buffers headers of any size, hands each request to
the ingress at once, and the ingress then pulls the body through the proxy while the request holds one of the
ingress's `max_ongoing_requests` slots. So `LimitsMiddleware` refuses oversized headers (431) and bodies (413, from
Content-Length before reading anything, or as chunks arrive) and cuts a body that is not complete within
`body_read_timeout_s` (408): a client that sends headers and stalls gives its slot back after that long, and no
engine work is queued for it. Each refusal is OpenAI-shaped JSON and closes the connection (the ingress reads no
more of the body; Serve's proxy still buffers what the client sent until then: bound that in front of Serve).
It is pure ASGI (not BaseHTTPMiddleware), so streamed responses and disconnects pass untouched.

`parse_json_body` turns the body into JSON with its own bounds: UTF-8 only, no RecursionError from deep nesting,
nesting at most `RequestLimits.max_json_depth`, every failure a 400 naming `body`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from phifleet.protocol.errors import OpenAIError
from phifleet.serve.config import HttpConfig

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class HttpLimits:
    """What `LimitsMiddleware` enforces; taken from `HttpConfig` once the ingress has its config."""

    max_body_bytes: int
    max_header_bytes: int
    body_read_timeout_s: float

    @classmethod
    def of(cls, http: HttpConfig) -> HttpLimits:
        return cls(http.max_request_body_bytes, http.max_header_bytes, http.body_read_timeout_s)


_active = HttpLimits.of(HttpConfig())


def activate(limits: HttpLimits) -> None:
    """Set the limits every request of this process is held to (the ingress calls it with its config).

    Kept here, not in the ingress module: Serve pickles the ingress class by value, so globals its methods set
    would land in a copy of that module's namespace, not where the middleware (imported by reference) reads.
    """
    global _active
    _active = limits


def active() -> HttpLimits:
    return _active


class _ClientGone(Exception):
    """The client disconnected while sending its body: nobody is left to answer."""


async def send_error(send: Send, err: OpenAIError) -> None:
    """An OpenAI-shaped error as raw ASGI messages, closing the connection: an unread body may follow."""
    payload = json.dumps(err.body()).encode()
    length = str(len(payload)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", length), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """Content-Length, or None without one; a malformed value is a 400."""
    for name, value in headers:
        if name.lower() == b"content-length":
            if not value.strip().isdigit():
                raise OpenAIError(400, "Content-Length is not a number", param="headers", code="invalid_header")
            return int(value)
    return None


async def _read_body(receive: Receive, limits: HttpLimits) -> bytes:
    """The whole body within the size bound and the read deadline (one deadline, not per chunk: a body trickled
    one byte at a time must not hold a slot forever)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.body_read_timeout_s
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            text = f"body: not received within {limits.body_read_timeout_s:g} s (http.body_read_timeout_s)"
            raise OpenAIError(408, text, param="body", code="request_timeout") from None
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise too_large(limits)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def too_large(limits: HttpLimits) -> OpenAIError:
    message = f"body: larger than {limits.max_body_bytes} bytes (http.max_request_body_bytes)"
    return OpenAIError(413, message, param="body", code="request_too_large")


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, as one message; then the client's own messages (its disconnect, for streams)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class LimitsMiddleware:
    """Checks headers, then reads the whole body under the limits before the app sees the request."""

    def __init__(self, app: ASGIApp, get_limits: Callable[[], HttpLimits] = active) -> None:
        self.app = app
        self.get_limits = get_limits  # called per request: the ingress sets its config after the app is built

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.get_limits()
        headers = scope.get("headers", [])
        try:
            if sum(len(name) + len(value) for name, value in headers) > limits.max_header_bytes:
                message = f"request headers are larger than {limits.max_header_bytes} bytes (http.max_header_bytes)"
                raise OpenAIError(431, message, code="request_header_fields_too_large")
            declared = _declared_length(headers)
            chunked = any(name.lower() == b"transfer-encoding" for name, _ in headers)
            if declared is None and not chunked:  # no body (GET, or an empty POST)
                await self.app(scope, receive, send)
                return
            if declared is not None and declared > limits.max_body_bytes:
                raise too_large(limits)
            body = await _read_body(receive, limits)
        except OpenAIError as err:
            await send_error(send, err)
            return
        except _ClientGone:
            return
        await self.app(scope, _replay(body, receive), send)


# --- the body as JSON ------------------------------------------------------------------------------------------
def _too_deep(max_depth: int) -> OpenAIError:
    return OpenAIError(400, f"body: JSON nested deeper than {max_depth} levels", param="body")


def _exceeds_depth(value: Any, max_depth: int) -> bool:
    """Whether containers nest deeper than `max_depth` (the outermost object is level 1); iterative, no recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if level > max_depth:
            return True
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_json_body(raw: bytes, max_depth: int) -> Any:
    """`raw` as JSON, or a 400 naming `body`: not UTF-8 (RFC 8259), not JSON, too deep to parse, or too deep."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OpenAIError(400, f"body: not valid UTF-8 (byte {exc.start})", param="body") from None
    try:
        value = json.loads(text)
    except RecursionError:  # nesting past the interpreter's recursion limit: the decoder itself gives up
        raise _too_deep(max_depth) from None
    except json.JSONDecodeError as exc:
        message = f"body: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise OpenAIError(400, message, param="body") from None
    except ValueError:  # int() refuses a number of more digits than the interpreter converts
        message = f"body: not valid JSON: a number has more than {sys.get_int_max_str_digits()} digits"
        raise OpenAIError(400, message, param="body") from None
    if _exceeds_depth(value, max_depth):
        raise _too_deep(max_depth)
    return value
