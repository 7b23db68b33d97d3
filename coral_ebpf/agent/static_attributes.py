"""`beyla.attributes`: static resource attributes the agent adds to Beyla's data on receipt.

Beyla has no setting that carries static resource attributes for every service, so the agent
tags Beyla's resources (telemetry.sdk.name=beyla) before the transform sees them; Beyla's own
values win. Only installed when attributes are configured, so the receiver's fast path for
raw trace bodies stays in place otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from coral_ebpf.beyla.attributes import add_static_attributes
from coral_ebpf.consumer import Consumer, ConsumeResult


class StaticAttributesConsumer:
    """A Consumer that tags Beyla resources, then hands the request on."""

    def __init__(self, inner: Consumer, attributes: Mapping[str, str]) -> None:
        self._inner = inner
        self._attributes = dict(attributes)

    def consume_traces(self, request: ExportTraceServiceRequest) -> ConsumeResult:
        add_static_attributes(request, self._attributes)
        return self._inner.consume_traces(request)

    def consume_metrics(self, request: ExportMetricsServiceRequest) -> ConsumeResult:
        add_static_attributes(request, self._attributes)
        return self._inner.consume_metrics(request)

    def consume_logs(self, request: ExportLogsServiceRequest) -> ConsumeResult:
        add_static_attributes(request, self._attributes)
        return self._inner.consume_logs(request)
