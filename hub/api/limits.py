"""What one HTTP client may hold: body size, body read time, header read time.

Two layers, because ASGI sees a request only once its headers are complete:

- ``RequestLimits`` (pure ASGI middleware) refuses a body over ``max_body_bytes`` with 413
  ``RequestEntityTooLarge``: at once, without running the route, when ``Content-Length``
  says so, and as soon as a chunked body grows past it. A body that is not complete
  ``body_timeout`` seconds after its headers gets 408 ``RequestTimeout``. Either answer
  closes the connection, and the route sees a disconnect, so it changes nothing.
  (Starlette's ``RequestBodyLimitMiddleware`` checks ``Content-Length`` only when the route
  reads the body or answers, so a body-less route would run first, and it answers in plain text.)
- ``header_deadline_protocol`` is uvicorn's httptools protocol with the timeout uvicorn lacks:
  a connection must deliver a request's headers within ``header_timeout`` seconds of opening
  or of the request's first byte; a silent connection is closed, a slow one gets 408.
  uvicorn's own ``timeout_keep_alive`` covers idle time between requests only.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from hub.api.errors import error_response

__all__ = ["DEFAULT_BODY_TIMEOUT", "DEFAULT_MAX_BODY_BYTES", "RequestLimits", "header_deadline_protocol"]

# The largest legitimate request measured: a 1000-device bulk import with 128-character ids and
# status reasons and 64-byte keys, about 860 KB compact and 1 MB indented (a method payload
# of 128 KB sent \\u-escaped is under 400 KB). 2 MiB leaves room for what clients add.
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
DEFAULT_BODY_TIMEOUT = 30.0

_CLOSE_HEADER = (b"connection", b"close")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser has refused such a request already
    return None


class RequestLimits:
    """Refuses request bodies that are too large (413) or too slow (408); see the module docstring."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _send_error(send, 413, "RequestEntityTooLarge", self._too_large(f"declares {declared} bytes"))
            return
        guard = _BodyGuard(self, receive, send)
        await self.app(scope, guard.receive, guard.send)

    def _too_large(self, what: str) -> str:
        return f"the request body {what}, over the limit of {self.max_body_bytes} bytes"


class _BodyGuard:
    """One request's receive and send, counting body bytes against the limit and the deadline."""

    def __init__(self, limits: RequestLimits, receive: Receive, send: Send) -> None:
        self._limits = limits
        self._receive = receive
        self._send = send
        self._deadline = asyncio.get_running_loop().time() + limits.body_timeout
        self._received = 0
        self._body_complete = False
        self._response_started = False
        self._refused = False

    async def receive(self) -> Message:
        if self._refused:
            return {"type": "http.disconnect"}
        if self._body_complete:  # what follows the body is the disconnect, whenever it comes
            return await self._receive()
        try:
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError:
            seconds = self._limits.body_timeout
            await self._refuse(408, "RequestTimeout", f"the request body did not arrive within {seconds:g} s")
            return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._limits.max_body_bytes:
                await self._refuse(413, "RequestEntityTooLarge", self._limits._too_large("grew past that"))
                return {"type": "http.disconnect"}
            self._body_complete = not message.get("more_body", False)
        return message

    async def send(self, message: Message) -> None:
        if self._refused:
            return  # the route's answer to the disconnect it was shown
        if message["type"] == "http.response.start":
            self._response_started = True
        await self._send(message)

    async def _refuse(self, status: int, code: str, text: str) -> None:
        if not self._response_started:
            await _send_error(self._send, status, code, text)
        self._refused = True


async def _send_error(send: Send, status: int, code: str, text: str) -> None:
    response = error_response(status, code, text)
    await send({"type": "http.response.start", "status": status, "headers": [*response.raw_headers, _CLOSE_HEADER]})
    await send({"type": "http.response.body", "body": response.body})


class _HeaderDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol; a request's headers must be complete within ``header_timeout``."""

    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._bytes_while_waiting = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        # A new request begins (or an answered one's unread body goes on) only when no
        # request is in progress; a request in progress is the body deadline's business.
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()
        if self._header_timer is not None:
            self._bytes_while_waiting += len(data)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._bytes_while_waiting = 0
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._bytes_while_waiting:  # a silent connection gets no answer, a slow request does
            text = f"the request headers did not arrive within {self.header_timeout:g} s"
            response = error_response(408, "RequestTimeout", text)
            headers = [*response.raw_headers, _CLOSE_HEADER]
            head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
            self.transport.write(STATUS_LINE[408] + head + b"\r\n" + response.body)
        self.transport.close()


def header_deadline_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's ``http=`` protocol class with this header timeout (seconds)."""

    class HeaderDeadline(_HeaderDeadline):
        pass

    HeaderDeadline.header_timeout = header_timeout
    return HeaderDeadline
