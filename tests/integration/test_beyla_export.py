"""What the supervised stand-in sends: Beyla's OTLP (names, units, buckets, attributes, cumulative
temporality) to the endpoint and protocol the agent configured, at the configured interval."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from coral_ebpf.beyla.supervisor import BeylaSupervisor
from coral_ebpf.discovery.model import ServiceEntry
from tests.beyla_standin import install_standin
from tests.beyla_standin.sink import OtlpSink
from tests.beyla_standin.telemetry import DURATION_BUCKETS, SIZE_BUCKETS
from tests.integration.beyla_support import http_service, settings_for, wait_for

DURATION_METRICS = {"http.server.request.duration", "rpc.server.call.duration"}


@pytest.fixture
def service() -> Iterator[ServiceEntry]:
    with http_service() as entry:
        yield entry


def attributes(values: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in values:
        value = item.value
        found[item.key] = getattr(value, value.WhichOneof("value"))
    return found


def run(tmp_path: Path, service: ServiceEntry, endpoint: str, control: dict[str, Any], **beyla: Any) -> BeylaSupervisor:
    binary = install_standin(tmp_path / "bin", control)
    supervisor = BeylaSupervisor(
        settings_for(tmp_path / "state", binary, **beyla), otlp_endpoint=endpoint, services=[service]
    )
    supervisor.start()
    wait_for(supervisor, lambda s: s["state"] == "running")
    return supervisor


@pytest.mark.parametrize("histograms", ["explicit", "exponential"])
def test_http_protobuf_metrics_and_traces_look_like_beylas(
    tmp_path: Path, service: ServiceEntry, histograms: str
) -> None:
    with OtlpSink() as sink:
        supervisor = run(
            tmp_path,
            service,
            sink.endpoint,
            {"request_interval": 0.05},
            protocols=["http", "grpc"],
            histograms=histograms,
        )
        try:
            assert sink.wait_for(
                lambda s: (
                    {"http.server.request.duration", "http.server.request.body.size", "http.server.response.body.size"}
                    <= s.metric_names()
                    and s.span_names()
                ),
                timeout=30,
            )
        finally:
            supervisor.stop(15)
    assert set(sink.paths) == {"/v1/metrics", "/v1/traces"}
    port = service.ports[0]
    resource_metrics = sink.metrics[-1].resource_metrics[0]
    resource = attributes(resource_metrics.resource.attributes)
    assert resource["telemetry.sdk.name"] == "beyla" and resource["os.type"] == "linux"
    assert resource["service.instance.id"].endswith(f":{service.pid}")
    for metric in resource_metrics.scope_metrics[0].metrics:
        if histograms == "exponential":
            assert metric.WhichOneof("data") == "exponential_histogram"
            data: Any = metric.exponential_histogram
        else:
            assert metric.WhichOneof("data") == "histogram"
            data = metric.histogram
        assert data.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
        point = data.data_points[0]
        if histograms == "exponential":
            assert point.count == point.zero_count + sum(point.positive.bucket_counts) and point.count > 0
            assert len(point.positive.bucket_counts) <= 160
        if metric.name == "http.server.request.duration":
            assert metric.unit == "s"
            assert histograms == "exponential" or tuple(point.explicit_bounds) == DURATION_BUCKETS
            labels = attributes(point.attributes)
            assert labels["server.port"] == port and labels["service.name"] == resource["service.name"]
            assert {"http.request.method", "http.response.status_code", "url.scheme", "http.route"} <= set(labels)
        else:
            assert metric.unit == "By"
            assert histograms == "exponential" or tuple(point.explicit_bounds) == SIZE_BUCKETS
    spans = [
        span for request in sink.traces for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans
    ]
    assert spans and all(span.kind == span.SPAN_KIND_SERVER for span in spans)
    assert {"GET /api/items", "POST /api/orders"} & {span.name for span in spans}


class _GrpcSink(metrics_service_pb2_grpc.MetricsServiceServicer, trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.names: set[str] = set()
        self.spans = 0
        self.changed = threading.Condition()

    def Export(self, request: Any, context: Any) -> Any:
        with self.changed:
            if isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest):
                self.names |= {m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
                self.changed.notify_all()
                return metrics_service_pb2.ExportMetricsServiceResponse()
            self.spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            self.changed.notify_all()
            return trace_service_pb2.ExportTraceServiceResponse()


def test_grpc_export_and_protocol_per_port(tmp_path: Path, service: ServiceEntry) -> None:
    sink = _GrpcSink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(sink, server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    control = {"ports": {str(service.ports[0]): "grpc"}, "request_interval": 0.05}
    supervisor = run(tmp_path, service, f"http://127.0.0.1:{port}", control, otlp_protocol="grpc")
    try:
        with sink.changed:
            assert sink.changed.wait_for(lambda: "rpc.server.call.duration" in sink.names and sink.spans, timeout=30)
    finally:
        supervisor.stop(15)
        server.stop(0)
    assert "http.server.request.duration" not in sink.names


def test_protocols_not_asked_for_are_not_exported(tmp_path: Path, service: ServiceEntry) -> None:
    with OtlpSink() as sink:
        supervisor = run(tmp_path, service, sink.endpoint, {"request_interval": 0.05}, protocols=["grpc", "sql"])
        try:
            wait_for(supervisor, lambda s: s["health"]["instrumented_processes"] == 1)
            assert not sink.wait_for(lambda s: bool(s.metric_names() or s.span_names()), timeout=3)
        finally:
            supervisor.stop(15)
