"""Poison values through both transports: rejected alone (partial success), siblings stored, queries answer."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.metrics.v1.metrics_pb2 import HistogramDataPoint, Metric
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from coral_ebpf.otlp.receiver import OtlpReceiver
from coral_ebpf.otlp.settings import OtlpSettings
from coral_ebpf.query.dispatch import run_query
from coral_ebpf.storage.writer import Storage
from tests.helpers.beyla_otlp import (
    DELTA,
    SECOND_NS,
    beyla_resource,
    http_server_attributes,
    http_server_span,
    key_values,
    metrics_request,
    new_ids,
    trace_request,
)
from tests.helpers.datapath import data_path

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
DAY_NS = 86400 * SECOND_NS


class Served:
    def __init__(self, storage: Storage, receiver: OtlpReceiver) -> None:
        self.storage = storage
        self.receiver = receiver

    def query(self, kind: str, **params: Any) -> dict[str, Any]:
        assert self.storage.flush(30.0)
        with self.storage.reader() as reader:
            return run_query(reader, kind, params)

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        assert self.receiver.http_address is not None
        host, _, port = self.receiver.http_address.rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=20)
        connection.request("POST", path, body=body, headers={"Content-Type": "application/x-protobuf"})
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return response.status, data

    def export_traces(self, transport: str, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
        if transport == "grpc":
            assert self.receiver.grpc_address is not None
            with grpc.insecure_channel(self.receiver.grpc_address) as channel:
                return TraceServiceStub(channel).Export(request, timeout=20)  # type: ignore[no-any-return]
        status, body = self.post("/v1/traces", request.SerializeToString())
        assert status == 200, body
        return ExportTraceServiceResponse.FromString(body)

    def export_metrics(self, transport: str, request: ExportMetricsServiceRequest) -> ExportMetricsServiceResponse:
        if transport == "grpc":
            assert self.receiver.grpc_address is not None
            with grpc.insecure_channel(self.receiver.grpc_address) as channel:
                return MetricsServiceStub(channel).Export(request, timeout=20)  # type: ignore[no-any-return]
        status, body = self.post("/v1/metrics", request.SerializeToString())
        assert status == 200, body
        return ExportMetricsServiceResponse.FromString(body)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with data_path(tmp_path) as (storage, processor):
        receiver = OtlpReceiver(OtlpSettings(grpc_endpoint="127.0.0.1:0", http_endpoint="127.0.0.1:0"), processor)
        receiver.start()
        try:
            yield Served(storage, receiver)
        finally:
            receiver.stop(5.0)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_poison_span_times_are_rejected_alone(served: Served, transport: str) -> None:
    now = time.time_ns()
    resource = beyla_resource(f"poison-{transport}", pid=41)
    spans = []
    for start, duration in ((now - SECOND_NS, 1000), (INT64_MAX - 5, 1), (UINT64_MAX - 5, 1), (now + 2 * DAY_NS, 1)):
        trace_id, span_id = new_ids()
        spans.append(http_server_span(trace_id, span_id, start_ns=start, duration_ns=duration))
    response = served.export_traces(transport, trace_request(resource, spans))
    assert response.partial_success.rejected_spans == 3
    assert "end_time_unix_nano is more than" in response.partial_success.error_message
    traces = served.query("traces", service=f"poison-{transport}", since="1h")["traces"]
    assert len(traces) == 1 and traces[0]["start_time"] is not None
    assert served.query("traces", service="nobody", since="1h")["traces"] == []


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_exporter_span_far_in_the_future_is_not_retried_forever(served: Served, transport: str) -> None:
    """The OpenTelemetry SDK exporter gets a success (partial), not 503/UNAVAILABLE to retry."""
    exporter: SpanExporter
    if transport == "grpc":
        exporter = GrpcSpanExporter(endpoint=served.receiver.grpc_address, insecure=True, timeout=10)
    else:
        exporter = HttpSpanExporter(endpoint=f"http://{served.receiver.http_address}/v1/traces", timeout=10)
    results: list[SpanExportResult] = []

    class Recording(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            result = exporter.export(spans)
            results.append(result)
            return result

    service = f"sdk-{transport}"
    provider = TracerProvider(resource=Resource.create({"service.name": service, "process.pid": 42}))
    provider.add_span_processor(SimpleSpanProcessor(Recording()))
    tracer = provider.get_tracer("door")
    good = tracer.start_span("GET /ok", kind=SpanKind.SERVER)
    good.end()
    poison = tracer.start_span("GET /poison", kind=SpanKind.SERVER, start_time=time.time_ns())
    poison.end(end_time=INT64_MAX)
    started = time.monotonic()
    provider.shutdown()
    assert results == [SpanExportResult.SUCCESS, SpanExportResult.SUCCESS]
    assert time.monotonic() - started < 30  # not retried with back-off
    traces = served.query("traces", service=service, since="1h")["traces"]
    assert [t["root_operation"] for t in traces] == ["GET /ok"]


def _point(route: str, now: int, **fields: Any) -> HistogramDataPoint:
    resource = beyla_resource("poison-metrics")
    values = {
        "start_time_unix_nano": now - 10 * SECOND_NS,
        "time_unix_nano": now,
        "count": 3,
        "sum": 0.03,
        "bucket_counts": [3, 0],
        "explicit_bounds": [0.05],
        **fields,
    }
    attributes = key_values(http_server_attributes(resource, "GET", route, 200))
    return HistogramDataPoint(attributes=attributes, **values)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_poison_points_are_rejected_alone(served: Served, transport: str) -> None:
    now = time.time_ns()
    metric = Metric(name="http.server.request.duration", unit="s")
    metric.histogram.aggregation_temporality = DELTA
    metric.histogram.data_points.extend(
        [
            _point("/good", now),
            _point("/infinity", now, time_unix_nano=INT64_MAX),
            _point("/tomorrow", now, time_unix_nano=now + 2 * DAY_NS),
            _point("/huge", now, count=UINT64_MAX, bucket_counts=[UINT64_MAX, 0]),
            _point("/backwards", now, start_time_unix_nano=now + SECOND_NS),
            _point("/nan", now, sum=float("nan")),
        ]
    )
    response = served.export_metrics(transport, metrics_request(beyla_resource("poison-metrics"), [metric]))
    assert response.partial_success.rejected_data_points == 5
    message = response.partial_success.error_message
    for field in ("time_unix_nano", "count is 2^63", "start_time_unix_nano", "sum is not finite"):
        assert field in message
    result = served.query("http", since="1h")
    assert [(row["route"], row["requests"]) for row in result["rows"]] == [("/good", 3)]
    missing = served.query("http", service="no-such-service", since="1h")
    assert missing["rows"] == [] and [s["service"] for s in missing["services_available"]] == ["poison-metrics"]
