"""Separate idle and header deadlines for OTLP/HTTP connections.

aiohttp has one timer for a connection between requests (`keepalive_timeout`): it runs from the
connection's start or the last answer until a request's headers are complete, so "idle" and
"slow headers" cannot be told apart, and a request that starts just before the keep-alive time
runs out is cut off half-way through its headers. `TimedConnection` wraps aiohttp's protocol and
keeps two deadlines itself:

- **idle** (`otlp.idle_timeout`): from the connection's start or the last answer until the first
  byte of the next request; past it the connection is closed (a kept-alive connection nobody
  uses);
- **headers** (`otlp.header_timeout`): from a request's first byte until its headers are complete
  and the request is handed to a handler; past it the client gets 408 and the connection is
  closed (slowloris).

The body has its own deadline (`otlp.body_timeout`, in http_server.py). aiohttp's keep-alive timer
stays on as a backstop, set to the sum of both, so it never fires before these.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable

from aiohttp import web

_HEADER_TIMEOUT_TEXT = b"the request headers did not arrive in time (otlp.header_timeout)\n"
_HEADER_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
    + f"Content-Length: {len(_HEADER_TIMEOUT_TEXT)}\r\n\r\n".encode()
    + _HEADER_TIMEOUT_TEXT
)


class _Phase(enum.Enum):
    IDLE = "idle"  # no request in progress: waiting for a first byte
    HEADERS = "headers"  # a request's first bytes arrived, its headers are not complete yet
    HANDLING = "handling"  # a handler has the request (its body has its own deadline)


class TimedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the idle and header deadlines around it."""

    def __init__(self, inner: asyncio.Protocol, idle_timeout: float, header_timeout: float) -> None:
        self._inner = inner
        self._idle_timeout = idle_timeout
        self._header_timeout = header_timeout
        self._phase = _Phase.IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self.timeouts: list[str] = []  # what closed it, for tests and logs

    # asyncio.Protocol, delegated ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._inner.connection_made(transport)
        self._arm(self._idle_timeout, self._idle_passed)

    def data_received(self, data: bytes) -> None:
        if self._phase is _Phase.IDLE:
            self._phase = _Phase.HEADERS
            self._arm(self._header_timeout, self._headers_passed)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # the request's life, told by the handler ---------------------------------------------------

    def request_started(self) -> None:
        """The headers are complete and a handler has the request."""
        self._phase = _Phase.HANDLING
        self._cancel()

    def request_finished(self) -> None:
        """The answer is given: the connection is idle until the next request's first byte."""
        self._phase = _Phase.IDLE
        self._arm(self._idle_timeout, self._idle_passed)

    # deadlines ----------------------------------------------------------------------------------

    def _arm(self, delay: float, expire: Callable[[], None]) -> None:
        self._cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, expire)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle_passed(self) -> None:
        self._timer = None
        if self._phase is _Phase.IDLE and self._transport is not None:
            self.timeouts.append("idle")
            self._transport.close()

    def _headers_passed(self) -> None:
        self._timer = None
        if self._phase is _Phase.HEADERS and self._transport is not None:
            self.timeouts.append("headers")
            self._transport.write(_HEADER_TIMEOUT_ANSWER)
            self._transport.close()


def connection_of(request: web.Request) -> TimedConnection | None:
    """The TimedConnection a request arrived on (None for a transport without one)."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, TimedConnection) else None
