"""The consumer contract: how OTLP data is handed to whatever stores it (the Collector's `consumer/`).

Producers (the OTLP receiver, the built-in RED engine) hand requests to a `Consumer` and never
know about transform or storage; the transform implements it. This package depends on nothing of
coral_ebpf, so every part can use it; tests use the double in `tests/helpers/consumertest.py`.

A consumer either accepts a request (possibly rejecting some items, reported as OTLP partial
success) or raises one of the errors below, which the receiver maps to HTTP and gRPC status codes
in one place (`otlp/errors.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


@dataclass(frozen=True)
class ConsumeResult:
    """Outcome of a request that was accepted: how many items were rejected, and why."""

    rejected: int = 0
    message: str = ""


class QueueFullError(Exception):
    """The write queue is full: the client should retry after `retry_after` seconds (429 / RESOURCE_EXHAUSTED)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConsumerUnavailableError(Exception):
    """The pipeline is stopping or broken; the client should retry later (503 / UNAVAILABLE)."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Consumer(Protocol):
    """Receives decoded OTLP requests. Must be thread-safe; must not block for long."""

    def consume_traces(self, request: ExportTraceServiceRequest) -> ConsumeResult: ...

    def consume_metrics(self, request: ExportMetricsServiceRequest) -> ConsumeResult: ...

    def consume_logs(self, request: ExportLogsServiceRequest) -> ConsumeResult: ...


@runtime_checkable
class SerializedTracesConsumer(Protocol):
    """Optional fast path: a consumer that reads a protobuf ExportTraceServiceRequest from its bytes.

    When the consumer has it, the receiver hands protobuf trace bodies (gRPC, and OTLP/HTTP after
    decompression) over undecoded, saving a full decode. It must raise
    `google.protobuf.message.DecodeError` for a body that is not such a request (answered 400 /
    INVALID_ARGUMENT), and may raise QueueFullError / ConsumerUnavailableError like the others.
    """

    def consume_traces_serialized(self, body: bytes) -> ConsumeResult: ...


class BodyReservation(Protocol):
    """Memory held for a request body while it is read; `release` is idempotent."""

    def grow(self, nbytes: int) -> None:
        """Hold `nbytes` more (a chunked body grew); raises QueueFullError when they do not fit."""
        ...

    def release(self) -> None: ...


@runtime_checkable
class BodyBudget(Protocol):
    """Optional: a consumer that counts request bodies against a memory budget while they are read.

    The OTLP/HTTP receiver reserves a body's size before reading it (and as a chunked body grows),
    and releases the reservation when the consumer takes over the request. Refusals are
    QueueFullError (429 + Retry-After).
    """

    def reserve_body(self, nbytes: int) -> BodyReservation: ...
