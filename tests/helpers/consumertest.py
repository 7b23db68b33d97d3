"""The test double for `coral_ebpf.consumer.Consumer`, after the Collector's `consumer/consumertest`.

`Sink` keeps a copy of every request it accepts, thread-safely, and lets a test decide the outcome:
refuse the first N requests with QueueFullError, run a `behaviour` hook (raise to refuse, return a
ConsumeResult to accept partially), or pass each request on to a real consumer (`forward`) and keep a
copy to compare both ends. `SerializedSink` also offers the `SerializedTracesConsumer` fast path.
`CountingSink` / `SerializedCountingSink` only count, for benchmarks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from coral_ebpf.consumer import Consumer, ConsumeResult, QueueFullError
from tests.helpers.timing import scaled

# Called with the signal ("traces", "metrics", "logs") before a request is kept: raise QueueFullError or
# ConsumerUnavailableError to refuse it, return a ConsumeResult to accept it partially, None to accept it.
Behaviour = Callable[[str], ConsumeResult | None]

R = TypeVar("R", bound=Message)


@dataclass
class Sink:
    """A Consumer that keeps what it accepts; see the module docstring for the knobs."""

    behaviour: Behaviour | None = None
    forward: Consumer | None = None
    refuse_first: int = 0
    refuse_retry_after: float = 0.05
    traces: list[ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[ExportMetricsServiceRequest] = field(default_factory=list)
    logs: list[ExportLogsServiceRequest] = field(default_factory=list)
    refused: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._arrived = threading.Condition(self._lock)

    def _consume(
        self, signal: str, store: list[R], request: R, forward: Callable[[R], ConsumeResult] | None
    ) -> ConsumeResult:
        with self._lock:
            if self.refused < self.refuse_first:
                self.refused += 1
                raise QueueFullError("full (test)", retry_after=self.refuse_retry_after)
        result = self.behaviour(signal) if self.behaviour is not None else None
        if forward is not None:
            result = forward(request)
        copy = type(request)()
        copy.CopyFrom(request)
        with self._arrived:
            store.append(copy)
            self._arrived.notify_all()
        return result or ConsumeResult()

    def consume_traces(self, request: ExportTraceServiceRequest) -> ConsumeResult:
        forward = self.forward.consume_traces if self.forward is not None else None
        return self._consume("traces", self.traces, request, forward)

    def consume_metrics(self, request: ExportMetricsServiceRequest) -> ConsumeResult:
        forward = self.forward.consume_metrics if self.forward is not None else None
        return self._consume("metrics", self.metrics, request, forward)

    def consume_logs(self, request: ExportLogsServiceRequest) -> ConsumeResult:
        forward = self.forward.consume_logs if self.forward is not None else None
        return self._consume("logs", self.logs, request, forward)

    def spans(self) -> list[Span]:
        """Every span kept so far, in arrival order."""
        with self._lock:
            return [s for r in self.traces for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Whether `predicate` became true, checked each time a request arrives, within `timeout` (scaled) seconds."""
        with self._arrived:
            return self._arrived.wait_for(predicate, scaled(timeout))

    def clear(self) -> None:
        with self._lock:
            self.traces.clear()
            self.metrics.clear()
            self.logs.clear()


@dataclass
class SerializedSink(Sink):
    """A Sink that also takes protobuf trace bodies undecoded (the `SerializedTracesConsumer` fast path)."""

    bodies: list[bytes] = field(default_factory=list)

    def consume_traces_serialized(self, body: bytes) -> ConsumeResult:
        request = ExportTraceServiceRequest.FromString(body)  # DecodeError for a bad body, as the contract says
        with self._lock:
            self.bodies.append(body)
        return self.consume_traces(request)


@dataclass
class CountingSink:
    """A Consumer that counts what it accepts and keeps nothing, for benchmarks where a copy would cost.

    `spans` counts decoded trace requests' spans; `observations` the requests recorded in histogram
    points (their `count`); `serialized_bodies` the trace bodies a `SerializedCountingSink` took
    undecoded (not parsed, so that the consumer costs nothing).
    """

    spans: int = 0
    observations: int = 0
    serialized_bodies: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def consume_traces(self, request: ExportTraceServiceRequest) -> ConsumeResult:
        count = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        with self._lock:
            self.spans += count
        return ConsumeResult()

    def consume_metrics(self, request: ExportMetricsServiceRequest) -> ConsumeResult:
        count = sum(
            point.count
            for resource in request.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            for point in metric.histogram.data_points
        )
        with self._lock:
            self.observations += count
        return ConsumeResult()

    def consume_logs(self, request: ExportLogsServiceRequest) -> ConsumeResult:
        return ConsumeResult()


@dataclass
class SerializedCountingSink(CountingSink):
    """A CountingSink that also takes trace bodies undecoded (the `SerializedTracesConsumer` fast path)."""

    def consume_traces_serialized(self, body: bytes) -> ConsumeResult:
        with self._lock:
            self.serialized_bodies += 1
        return ConsumeResult()
