"""OTLP/HTTP: `POST /v1/traces`, `/v1/metrics`, `/v1/logs` on aiohttp, in a thread of its own.

The event loop only reads bodies (within `otlp.max_body_bytes`) and writes answers; the
decompression, decoding and the consumer call run on worker threads. aiohttp's own
decompression is off (`auto_decompress=False`) so that inflating is always bounded
(`otlp/compression.py`).

Fairness (`otlp.*` limits, `ConnectionLimits`):
- a connection on which no request starts within `idle_timeout` of opening, or of its previous
  answer, is closed; a request's headers must be complete within `header_timeout` of its first
  byte, else 408 and closed (`http_timeouts.py`: aiohttp has one timer for both);
- a body must arrive within `body_timeout` (408), and while it arrives its bytes are held in the
  memory budget (`BodyBudget`, when the consumer has one): 429 when they do not fit;
- a request takes one of `max_concurrent_calls` decode slots only once its body is fully read,
  so slow senders cannot make a quick one wait;
- beyond `max_connections` open connections, a new one is answered 429 with Retry-After and closed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable
from functools import partial

import aiohttp
from aiohttp import web

from coral_ebpf.consumer import BodyBudget, BodyReservation, QueueFullError
from coral_ebpf.errors import CoralError
from coral_ebpf.loop_thread import LoopThread
from coral_ebpf.otlp.compression import SUPPORTED_ENCODINGS, decompress, normalise_encoding
from coral_ebpf.otlp.encoding import Encoding, encode, encoding_for_content_type
from coral_ebpf.otlp.errors import (
    BodyTimeoutError,
    BodyTooLargeError,
    ErrorReply,
    MalformedRequestError,
    ReceiverError,
    TooBusyError,
    reply_for,
)
from coral_ebpf.otlp.export import Exporter, ExportResult
from coral_ebpf.otlp.http_timeouts import TimedConnection, connection_of
from coral_ebpf.otlp.settings import ConnectionLimits
from coral_ebpf.otlp.signals import SIGNALS, SignalHandler
from coral_ebpf.otlp.stats import OTHER, ReceiverStats
from coral_ebpf.units import parse_endpoint

log = logging.getLogger(__name__)

# Decoding and flattening run in Python under the GIL: more than two workers only add contention
# (see GRPC_WORKERS in grpc_server.py for the figures).
HTTP_WORKERS = 2
# After answering early (413), keep reading and discarding the rest of the body this long, so
# the client sees the answer instead of a reset connection.
LINGERING_SECONDS = 2.0
_PATHS = ", ".join(signal.http_path for signal in SIGNALS)


def _http_error_key(reply: ErrorReply) -> str:
    return str(reply.http_status)


class HttpTransport:
    def __init__(
        self,
        endpoint: str,
        max_body_bytes: int,
        exporter: Exporter,
        stats: ReceiverStats,
        retry_after_floor: float,
        *,
        limits: ConnectionLimits | None = None,
        body_budget: BodyBudget | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._body_budget = body_budget
        self._limits = limits or ConnectionLimits()
        self._max_body_bytes = max_body_bytes
        self._exporter = exporter
        self._stats = stats
        self._retry_after_floor = retry_after_floor
        self._loop_thread = LoopThread("otlp-http-loop")
        self._runner: web.AppRunner | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._slots: asyncio.Semaphore | None = None
        self.address: str | None = None

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> str:
        """Bind and serve; return the bound `host:port` (the real port when 0 was configured)."""
        host, port = parse_endpoint(self.endpoint)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=HTTP_WORKERS, thread_name_prefix="otlp-http")
        try:
            self.address = self._loop_thread.start(partial(self._listen, host, port))
        except OSError as exc:
            self._executor.shutdown(wait=False)
            raise CoralError(
                f"cannot listen for OTLP/HTTP on {self.endpoint}: {exc.strerror or exc}",
                hint="free the port, or set otlp.http_endpoint to another host:port (empty disables HTTP)",
            ) from None
        log.info("OTLP/HTTP listening", extra={"fields": {"address": self.address}})
        return self.address

    def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish within `timeout`, then close."""
        if not self._loop_thread.running:
            return
        if not self._loop_thread.stop(partial(self._shutdown, timeout), timeout + 5.0):
            log.warning("OTLP/HTTP did not shut down in time", extra={"fields": {"timeout_s": timeout}})
        if self._executor is not None:
            self._executor.shutdown(wait=self._in_flight == 0)
        self._runner = self._executor = None

    async def _listen(self, host: str, port: int) -> str:
        @web.middleware
        async def unknown_route(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            connection = connection_of(request)
            if connection is not None:
                connection.request_started()  # its header deadline is met; the body has its own
            try:
                return await self._unknown_route(request, handler)
            finally:
                if connection is not None:
                    connection.request_finished()

        self._slots = asyncio.Semaphore(self._limits.max_concurrent_calls)
        app = web.Application(middlewares=[unknown_route])
        for signal in SIGNALS:
            app.router.add_post(signal.http_path, partial(self._export, signal))
        runner = web.AppRunner(
            app,
            access_log=None,
            auto_decompress=False,
            lingering_time=LINGERING_SECONDS,
            shutdown_timeout=1.0,
            # A backstop only: TimedConnection closes idle connections and late headers first.
            keepalive_timeout=self._limits.idle_timeout + self._limits.header_timeout,
        )
        await runner.setup()
        refusal = reply_for(
            TooBusyError(
                f"more than {self._limits.max_connections} connections are open (otlp.max_connections); retry later"
            ),
            self._retry_after_floor,
        )
        site = _CappedSite(runner, host, port, self._limits, refusal)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        return f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"

    async def _shutdown(self, timeout: float) -> None:
        if self._runner is None:
            return
        for site in list(self._runner.sites):
            await site.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await self._runner.cleanup()
        # Connections still lingering over an unread body (after a 413) end here, not at loop.close().
        leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    # requests --------------------------------------------------------------------------------

    async def _unknown_route(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed:
            self._stats.record("http", OTHER, error="405")
            return web.Response(
                status=405,
                headers={"Allow": "POST"},
                text=f"{request.method} is not allowed on {request.path}: OTLP/HTTP exports are POST requests\n",
            )
        except web.HTTPNotFound:
            self._stats.record("http", OTHER, error="404")
            return web.Response(status=404, text=f"no OTLP endpoint at {request.path}: POST to one of {_PATHS}\n")

    async def _export(self, signal: SignalHandler, request: web.Request) -> web.StreamResponse:
        self._in_flight += 1
        try:
            return await self._export_request(signal, request)
        finally:
            self._in_flight -= 1

    async def _export_request(self, signal: SignalHandler, request: web.Request) -> web.StreamResponse:
        try:
            encoding = encoding_for_content_type(request.headers.get("Content-Type"))
        except ReceiverError as exc:
            # No encoding to answer in: the reply is plain text, listing what is accepted.
            reply = reply_for(exc, self._retry_after_floor)
            self._stats.record("http", signal.name, error=str(reply.http_status))
            return web.Response(
                status=reply.http_status, text=reply.message + "\n", headers={"Accept-Post": _ACCEPT_POST}
            )
        reservation: BodyReservation | None = None
        try:
            coding = normalise_encoding(request.headers.get("Content-Encoding"))
            if self._body_budget is not None:
                # Counted against the memory budget while it arrives, not only once decoded.
                reservation = self._body_budget.reserve_body(request.content_length or 0)
            body = await self._read_body(request, reservation)
        except (ReceiverError, QueueFullError) as exc:
            if reservation is not None:
                reservation.release()
            reply = reply_for(exc, self._retry_after_floor)
            self._stats.record("http", signal.name, bytes_in=request.content_length or 0, error=str(reply.http_status))
            response = self._error_response(reply, encoding)
            if isinstance(exc, BodyTooLargeError | BodyTimeoutError | QueueFullError):
                response.force_close()  # the body (or its rest) was not read: the connection is spent
            elif reply.http_status == 415:
                response.headers["Accept-Encoding"] = ", ".join(SUPPORTED_ENCODINGS)
            return response

        assert self._executor is not None and self._slots is not None
        limit = self._max_body_bytes
        export = partial(
            self._exporter.handle,
            "http",
            signal,
            payload=partial(decompress, body, coding, limit),
            encoding=encoding,
            bytes_in=len(body),
            error_key=_http_error_key,
        )

        def handle() -> ExportResult:
            if reservation is not None:
                reservation.release()  # the consumer's own reservation (body and what it decodes to) takes over
            return export()

        # The slot is taken only now that the body is here: a slow sender holds a connection, not a slot.
        try:
            async with self._slots:
                result = await asyncio.get_running_loop().run_in_executor(self._executor, handle)
        finally:
            if reservation is not None:
                reservation.release()
        if result.error is not None:
            return self._error_response(result.error, encoding)
        assert result.response is not None
        return web.Response(body=encode(result.response, encoding), content_type=encoding.content_type)

    async def _read_body(self, request: web.Request, reservation: BodyReservation | None) -> bytes:
        limit = self._max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise BodyTooLargeError(f"Content-Length {length} is over the limit of {limit} bytes (otlp.max_body_bytes)")
        timeout = self._limits.body_timeout
        try:
            async with asyncio.timeout(timeout):
                if length is not None:
                    return await request.content.readexactly(length) if length else b""
                body = bytearray()
                while chunk := await request.content.readany():
                    if reservation is not None:
                        reservation.grow(len(chunk))
                    body += chunk
                    if len(body) > limit:
                        raise BodyTooLargeError(f"body is over the limit of {limit} bytes (otlp.max_body_bytes)")
                return bytes(body)
        except TimeoutError:
            raise BodyTimeoutError(f"the request body did not arrive within {timeout:g}s (otlp.body_timeout)") from None
        except (asyncio.IncompleteReadError, aiohttp.ClientPayloadError, ConnectionError) as exc:
            raise MalformedRequestError(f"body ended before it was complete: {exc}") from None

    @staticmethod
    def _error_response(reply: ErrorReply, encoding: Encoding) -> web.Response:
        headers = {}
        if reply.retry_after_header is not None:
            headers["Retry-After"] = reply.retry_after_header
        return web.Response(
            status=reply.http_status,
            body=encode(reply.status_message(), encoding),
            content_type=encoding.content_type,
            headers=headers,
        )


_ACCEPT_POST = ", ".join(encoding.content_type for encoding in Encoding)


class _Refused(asyncio.Protocol):
    """A connection over the cap: one plain 429 with Retry-After, then closed."""

    def __init__(self, reply: ErrorReply) -> None:
        body = (reply.message + "\n").encode()
        self._answer = (
            f"HTTP/1.1 {reply.http_status} Too Many Requests\r\n"
            f"Retry-After: {reply.retry_after_header}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self._answer)
        transport.close()


class _CappedSite(web.TCPSite):
    """A TCP site that admits at most `max_connections` open connections (aiohttp has no such limit)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, limits: ConnectionLimits, refusal: ErrorReply):
        super().__init__(runner, host, port, reuse_port=False)
        self._limits = limits
        self._refusal = refusal

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None

        def admit() -> asyncio.BaseProtocol:
            if len(server.connections) >= self._limits.max_connections:
                return _Refused(self._refusal)
            return TimedConnection(server(), self._limits.idle_timeout, self._limits.header_timeout)

        self._server = await asyncio.get_running_loop().create_server(
            admit, self._host, self._port, backlog=self._backlog, reuse_address=self._reuse_address, reuse_port=False
        )
