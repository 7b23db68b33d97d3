"""A recording Consumer (the seam between receiver and pipeline) and a running receiver for tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from coral_ebpf.otlp import ConsumeResult, OtlpReceiver, OtlpSettings
from coral_ebpf.otlp.settings import ConnectionLimits

# Called before a request is recorded: raise QueueFullError/ConsumerUnavailableError to refuse it,
# or return a ConsumeResult to accept it partially. None means accept everything.
Behaviour = Callable[[str], ConsumeResult | None]


@dataclass
class RecordingConsumer:
    """Keeps every accepted request, thread-safely, and lets a test decide what happens next."""

    behaviour: Behaviour | None = None
    traces: list[ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[ExportMetricsServiceRequest] = field(default_factory=list)
    logs: list[ExportLogsServiceRequest] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._arrived = threading.Condition(self._lock)

    def _consume(self, signal: str, store: list[object], request: object) -> ConsumeResult:
        result = self.behaviour(signal) if self.behaviour is not None else None
        with self._arrived:
            store.append(request)
            self._arrived.notify_all()
        return result or ConsumeResult()

    def consume_traces(self, request: ExportTraceServiceRequest) -> ConsumeResult:
        return self._consume("traces", self.traces, request)  # type: ignore[arg-type]

    def consume_metrics(self, request: ExportMetricsServiceRequest) -> ConsumeResult:
        return self._consume("metrics", self.metrics, request)  # type: ignore[arg-type]

    def consume_logs(self, request: ExportLogsServiceRequest) -> ConsumeResult:
        return self._consume("logs", self.logs, request)  # type: ignore[arg-type]

    def spans(self) -> list[object]:
        with self._lock:
            return [s for r in self.traces for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self._arrived:
            return self._arrived.wait_for(predicate, timeout)


@contextlib.contextmanager
def running_receiver(
    consumer: RecordingConsumer | None = None,
    *,
    grpc_endpoint: str | None = "127.0.0.1:0",
    http_endpoint: str | None = "127.0.0.1:0",
    max_body_bytes: int = 4 * 1024 * 1024,
    retry_after: float = 1.0,
    limits: ConnectionLimits | None = None,
) -> Iterator[tuple[OtlpReceiver, RecordingConsumer]]:
    consumer = consumer or RecordingConsumer()
    settings = OtlpSettings(
        grpc_endpoint=grpc_endpoint,
        http_endpoint=http_endpoint,
        max_body_bytes=max_body_bytes,
        retry_after=retry_after,
        limits=limits or ConnectionLimits(),
    )
    receiver = OtlpReceiver(settings, consumer)
    receiver.start()
    try:
        yield receiver, consumer
    finally:
        receiver.stop(5.0)


@dataclass
class SerializedRecordingConsumer(RecordingConsumer):
    """Also takes protobuf trace bodies undecoded (the `SerializedTracesConsumer` fast path)."""

    bodies: list[bytes] = field(default_factory=list)

    def consume_traces_serialized(self, body: bytes) -> ConsumeResult:
        request = ExportTraceServiceRequest.FromString(body)  # DecodeError for a bad body, as the contract says
        with self._arrived:
            self.bodies.append(body)
        return self.consume_traces(request)
