"""OTLP/gRPC: the `opentelemetry.proto.collector.{trace,metrics,logs}.v1` Export methods on grpcio.

The methods are registered as a generic handler that receives the raw request bytes, so the
only Python work per request is one `FromString` (C, upb) and the consumer call. grpcio
enforces `otlp.max_body_bytes` as the maximum receive message length, on the message after
decompression too, and stops inflating a gzip message at that size (RESOURCE_EXHAUSTED,
"Decompressed message larger than max"): tests/integration/test_otlp_limits.py proves it with
a 1 GiB gzip bomb.

Concurrency: grpcio's own `maximum_concurrent_rpcs` refuses with a bare RESOURCE_EXHAUSTED,
which the Go SDK (Beyla) treats as permanent and drops. Instead `_CallLimit` (an interceptor,
run on grpcio's polling thread before a call is queued) counts the calls submitted to the
worker pool and not yet finished, and refuses a call beyond `otlp.max_concurrent_calls` with
RESOURCE_EXHAUSTED + RetryInfo (`otlp/errors.py`). grpcio runs every call, a refusal too, on a
pool thread from start to end, so the pool has a thread for each admitted call plus spare ones:
a refusal never queues behind admitted calls. The decode and consumer work itself runs at most
`GRPC_WORKERS` at a time (a semaphore); admitted calls beyond that wait on it, not on the GIL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

from coral_ebpf.errors import CoralError
from coral_ebpf.otlp.encoding import Encoding
from coral_ebpf.otlp.errors import ErrorReply, TooBusyError, reply_for
from coral_ebpf.otlp.export import Exporter
from coral_ebpf.otlp.settings import ConnectionLimits
from coral_ebpf.otlp.signals import SIGNALS, SignalHandler
from coral_ebpf.units import parse_endpoint

log = logging.getLogger(__name__)

# Workers run decode + consumer; the consumer must not block long, so a few threads suffice.
# Requests are decoded and flattened in Python, under the GIL: threads beyond two only fight
# over it. bench/ingest.py on 2 cores: 8 workers 102-115k spans/s stored, 4 workers 132-140k,
# 2 workers 147-162k. Calls beyond the workers wait (up to otlp.max_concurrent_calls, see _CallLimit).
GRPC_WORKERS = 2
# Pool threads beyond one per admitted call: they answer refusals at once.
_SPARE_THREADS = 4


def _grpc_error_key(reply: ErrorReply) -> str:
    return str(reply.grpc_code.name)


class _CountingPool(futures.ThreadPoolExecutor):
    """A thread pool that knows how many calls were submitted and have not finished yet."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="otlp-grpc")
        self._lock = threading.Lock()
        self.pending = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        with self._lock:
            self.pending += 1

        def counted() -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.pending -= 1

        return super().submit(counted)


class _CallLimit(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses a call beyond `limit` pending ones with RESOURCE_EXHAUSTED and RetryInfo."""

    def __init__(self, pool: _CountingPool, limit: int, refusal: ErrorReply) -> None:
        self._pool = pool
        self._limit = limit
        self._refusal = refusal

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or self._pool.pending < self._limit:
            return handler
        return grpc.unary_unary_rpc_method_handler(self._refuse)

    def _refuse(self, request: Any, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata(self._refusal.grpc_trailing_metadata())
        context.abort(self._refusal.grpc_code, self._refusal.message)
        raise AssertionError("context.abort returns only by raising")


class GrpcTransport:
    def __init__(
        self,
        endpoint: str,
        max_body_bytes: int,
        exporter: Exporter,
        *,
        limits: ConnectionLimits | None = None,
        retry_after_floor: float = 1.0,
    ) -> None:
        self.endpoint = endpoint
        self._max_body_bytes = max_body_bytes
        self._exporter = exporter
        self._limits = limits or ConnectionLimits()
        self._retry_after_floor = retry_after_floor
        self._workers = threading.BoundedSemaphore(GRPC_WORKERS)
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self.address: str | None = None

    def start(self) -> str:
        """Bind and serve; return the bound `host:port` (the real port when 0 was configured)."""
        host, port = parse_endpoint(self.endpoint)
        pool = _CountingPool(self._limits.max_concurrent_calls + _SPARE_THREADS)
        self._executor = pool
        limit = self._limits.max_concurrent_calls
        refusal = reply_for(
            TooBusyError(f"more than {limit} calls in progress (otlp.max_concurrent_calls); retry later"),
            self._retry_after_floor,
        )
        server = grpc.server(
            pool,
            handlers=[self._service_handler(signal) for signal in SIGNALS],
            interceptors=[_CallLimit(pool, limit, refusal)],
            options=[
                ("grpc.max_receive_message_length", self._max_body_bytes),
                # Without this a second agent (or anything else with SO_REUSEPORT) could share
                # the port silently; a taken port must be an error.
                ("grpc.so_reuseport", 0),
            ],
        )
        bracketed = f"[{host}]" if ":" in host else host
        try:
            bound_port = server.add_insecure_port(f"{bracketed}:{port}")
        except RuntimeError as exc:
            bound_port = 0
            reason = str(exc)
        else:
            reason = "address in use or not available on this host"
        if bound_port == 0:
            server.stop(None)
            self._executor.shutdown(wait=False)
            raise CoralError(
                f"cannot listen for OTLP/gRPC on {self.endpoint}: {reason}",
                hint="free the port, or set otlp.grpc_endpoint to another host:port (empty disables gRPC)",
            )
        server.start()
        self._server = server
        self.address = f"{bracketed}:{bound_port}"
        log.info("OTLP/gRPC listening", extra={"fields": {"address": self.address}})
        return self.address

    def begin_stop(self, grace: float) -> Any:
        """Refuse new RPCs now and let in-flight ones finish within `grace`; return an event to wait on."""
        if self._server is None:
            return None
        event = self._server.stop(grace)
        self._server = None
        return event

    def finish_stop(self, event: Any, timeout: float) -> None:
        drained = event is None or bool(event.wait(timeout))
        if self._executor is not None:
            # When the grace ran out, grpcio has already cancelled what was left; do not wait on it.
            self._executor.shutdown(wait=drained)
            self._executor = None

    def _service_handler(self, signal: SignalHandler) -> grpc.GenericRpcHandler:
        method = grpc.unary_unary_rpc_method_handler(self._export_method(signal))
        return grpc.method_handlers_generic_handler(signal.grpc_service, {"Export": method})

    def _export_method(self, signal: SignalHandler) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        exporter = self._exporter
        workers = self._workers

        def export(raw: bytes, context: grpc.ServicerContext) -> bytes:
            with workers:
                result = exporter.handle(
                    "grpc",
                    signal,
                    payload=lambda: raw,
                    encoding=Encoding.PROTOBUF,
                    bytes_in=len(raw),
                    error_key=_grpc_error_key,
                )
            if result.error is not None:
                context.set_trailing_metadata(result.error.grpc_trailing_metadata())
                context.abort(result.error.grpc_code, result.error.message)
            assert result.response is not None
            return result.response.SerializeToString()

        return export
