"""One small handler per OTLP signal: its messages, how its items are counted, where it goes.

Like the Collector's `internal/{trace,metrics,logs}/otlp.go`: a handler knows its request and
response types and which consumer method takes them, and nothing about transports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from coral_ebpf.consumer import Consumer, ConsumeResult, SerializedTracesConsumer
from coral_ebpf.otlp.encoding import count_spans_serialized


@dataclass(frozen=True)
class SignalHandler:
    name: str  # "traces", "metrics", "logs": the status key and the HTTP path suffix
    item_name: str  # what one item is called in messages and status ("spans", "data_points", "log_records")
    grpc_service: str  # fully qualified service name
    request_type: type[Message]
    response_type: type[Message]
    _count: Callable[[Any], int]
    _consume: Callable[[Consumer, Any], ConsumeResult]
    _partial_success: Callable[[Any, int, str], None]
    # The fast path for protobuf bodies, when the consumer takes them undecoded (traces only).
    _count_serialized: Callable[[bytes], int] | None = None
    _consume_serialized: Callable[[Any, bytes], ConsumeResult] | None = None

    @property
    def http_path(self) -> str:
        return f"/v1/{self.name}"

    def count_items(self, request: Message) -> int:
        return self._count(request)

    def consume(self, consumer: Consumer, request: Message) -> ConsumeResult:
        return self._consume(consumer, request)

    def takes_serialized(self, consumer: Consumer) -> bool:
        """True when protobuf bodies of this signal can go to `consumer` without being decoded here."""
        return self._consume_serialized is not None and isinstance(consumer, SerializedTracesConsumer)

    def count_serialized(self, payload: bytes) -> int:
        assert self._count_serialized is not None
        return self._count_serialized(payload)

    def consume_serialized(self, consumer: Consumer, payload: bytes) -> ConsumeResult:
        assert self._consume_serialized is not None
        return self._consume_serialized(consumer, payload)

    def response(self, rejected: int, message: str) -> Message:
        """The export response; `partial_success` only when something was rejected or explained."""
        response = self.response_type()
        if rejected or message:
            self._partial_success(response, rejected, message)
        return response


def _count_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> int:
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)


def _count_data_points(request: metrics_service_pb2.ExportMetricsServiceRequest) -> int:
    # Items are data points, as the OTLP spec counts `rejected_data_points`.
    total = 0
    for resource in request.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    total += len(getattr(metric, kind).data_points)
    return total


def _count_log_records(request: logs_service_pb2.ExportLogsServiceRequest) -> int:
    return sum(len(scope.log_records) for resource in request.resource_logs for scope in resource.scope_logs)


def _traces_partial(response: trace_service_pb2.ExportTraceServiceResponse, rejected: int, message: str) -> None:
    response.partial_success.rejected_spans = rejected
    response.partial_success.error_message = message


def _metrics_partial(response: metrics_service_pb2.ExportMetricsServiceResponse, rejected: int, message: str) -> None:
    response.partial_success.rejected_data_points = rejected
    response.partial_success.error_message = message


def _logs_partial(response: logs_service_pb2.ExportLogsServiceResponse, rejected: int, message: str) -> None:
    response.partial_success.rejected_log_records = rejected
    response.partial_success.error_message = message


TRACES = SignalHandler(
    name="traces",
    item_name="spans",
    grpc_service="opentelemetry.proto.collector.trace.v1.TraceService",
    request_type=trace_service_pb2.ExportTraceServiceRequest,
    response_type=trace_service_pb2.ExportTraceServiceResponse,
    _count=_count_spans,
    _consume=lambda consumer, request: consumer.consume_traces(request),
    _partial_success=_traces_partial,
    _count_serialized=count_spans_serialized,
    _consume_serialized=lambda consumer, payload: consumer.consume_traces_serialized(payload),
)

METRICS = SignalHandler(
    name="metrics",
    item_name="data_points",
    grpc_service="opentelemetry.proto.collector.metrics.v1.MetricsService",
    request_type=metrics_service_pb2.ExportMetricsServiceRequest,
    response_type=metrics_service_pb2.ExportMetricsServiceResponse,
    _count=_count_data_points,
    _consume=lambda consumer, request: consumer.consume_metrics(request),
    _partial_success=_metrics_partial,
)

LOGS = SignalHandler(
    name="logs",
    item_name="log_records",
    grpc_service="opentelemetry.proto.collector.logs.v1.LogsService",
    request_type=logs_service_pb2.ExportLogsServiceRequest,
    response_type=logs_service_pb2.ExportLogsServiceResponse,
    _count=_count_log_records,
    _consume=lambda consumer, request: consumer.consume_logs(request),
    _partial_success=_logs_partial,
)

SIGNALS: tuple[SignalHandler, ...] = (TRACES, METRICS, LOGS)
