"""`BudgetedConsumer`: the receiver's consumer, refusing (429) a request the memory budget cannot hold.

It sits between the receiver and the transform, so the receiver stays unaware of the budget:
a refusal is a `QueueFullError`, answered 429 / RESOURCE_EXHAUSTED with Retry-After/RetryInfo.
It is also a `BodyBudget`: OTLP/HTTP holds a body's bytes here while it reads the body.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from coral_ebpf.consumer import Consumer, ConsumeResult, QueueFullError, SerializedTracesConsumer
from coral_ebpf.memory.budget import Held, MemoryBudget, MemoryBudgetExceededError

# Memory a request takes while it is flattened, per byte of protobuf: the body itself, the
# rows being built and their Arrow table (measured: 512 Beyla spans, a 150 KiB body, build a
# 260 KiB table).
SERIALIZED_FACTOR = 4
# A decoded request holds its Python protobuf objects on top of that.
DECODED_FACTOR = 6


class BodyHeld:
    """A body's bytes held in the budget (BodyReservation): refusals become QueueFullError."""

    def __init__(self, held: Held, refused: Callable[[MemoryBudgetExceededError], QueueFullError]) -> None:
        self._held = held
        self._refused = refused

    def grow(self, nbytes: int) -> None:
        try:
            self._held.grow(nbytes)
        except MemoryBudgetExceededError as exc:
            raise self._refused(exc) from None

    def release(self) -> None:
        self._held.release()


class BudgetedConsumer:
    """A Consumer (and SerializedTracesConsumer when the inner one is) that reserves memory first."""

    def __init__(self, inner: Consumer, budget: MemoryBudget, retry_after: float) -> None:
        self._inner = inner
        self._budget = budget
        self._retry_after = retry_after
        if isinstance(inner, SerializedTracesConsumer):
            self.consume_traces_serialized = self._consume_traces_serialized

    def _refused(self, exc: MemoryBudgetExceededError) -> QueueFullError:
        return QueueFullError(f"{exc}; retry later", retry_after=self._retry_after)

    def reserve_body(self, nbytes: int) -> BodyHeld:
        """Hold a request body's bytes while the receiver reads it (BodyBudget)."""
        try:
            return BodyHeld(self._budget.hold(nbytes), self._refused)
        except MemoryBudgetExceededError as exc:
            raise self._refused(exc) from None

    def consume_traces(self, request: ExportTraceServiceRequest) -> ConsumeResult:
        try:
            with self._budget.reserve(request.ByteSize() * DECODED_FACTOR):
                return self._inner.consume_traces(request)
        except MemoryBudgetExceededError as exc:
            raise self._refused(exc) from None

    def _consume_traces_serialized(self, body: bytes) -> ConsumeResult:
        inner = self._inner
        assert isinstance(inner, SerializedTracesConsumer)
        try:
            with self._budget.reserve(len(body) * SERIALIZED_FACTOR):
                return inner.consume_traces_serialized(body)
        except MemoryBudgetExceededError as exc:
            raise self._refused(exc) from None

    def consume_metrics(self, request: ExportMetricsServiceRequest) -> ConsumeResult:
        try:
            with self._budget.reserve(request.ByteSize() * DECODED_FACTOR):
                return self._inner.consume_metrics(request)
        except MemoryBudgetExceededError as exc:
            raise self._refused(exc) from None

    def consume_logs(self, request: ExportLogsServiceRequest) -> ConsumeResult:
        try:
            with self._budget.reserve(request.ByteSize() * DECODED_FACTOR):
                return self._inner.consume_logs(request)
        except MemoryBudgetExceededError as exc:
            raise self._refused(exc) from None
