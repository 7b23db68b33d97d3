"""The receiver fed by the real OpenTelemetry SDK exporters (gRPC and HTTP, traces and metrics)."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from coral_ebpf.otlp.consumer import ConsumeResult, QueueFullError
from tests.helpers.otlp_receiver import RecordingConsumer, running_receiver

RESOURCE = Resource.create({"service.name": "sdk-test", "service.namespace": "shop", "process.pid": 1234})


def _emit_spans(exporter: SpanExporter) -> None:
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("coral-test")
    with tracer.start_as_current_span("GET /users/{id}", kind=SpanKind.SERVER) as server:
        server.set_attribute("http.request.method", "GET")
        server.set_attribute("http.route", "/users/{id}")
        server.set_attribute("http.response.status_code", 200)
        with tracer.start_as_current_span("SELECT users", kind=SpanKind.CLIENT) as client:
            client.set_attribute("db.system.name", "postgresql")
            client.set_status(StatusCode.ERROR, "connection reset")
    provider.shutdown()


def _emit_metrics(exporter: MetricExporter) -> None:
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    histogram = provider.get_meter("coral-test").create_histogram("http.server.request.duration", unit="s")
    for value in (0.004, 0.02, 0.3):
        histogram.record(value, {"http.request.method": "GET", "http.route": "/users/{id}"})
    provider.force_flush()
    provider.shutdown()


def _check_spans(consumer: RecordingConsumer) -> None:
    assert consumer.wait_for(lambda: len(consumer.spans()) == 2)
    spans = {span.name: span for span in consumer.spans()}  # type: ignore[attr-defined]
    server, client = spans["GET /users/{id}"], spans["SELECT users"]
    assert server.kind == 2 and client.kind == 3
    assert client.parent_span_id == server.span_id and client.trace_id == server.trace_id
    assert client.status.code == 2 and client.status.message == "connection reset"
    attributes = {kv.key: kv.value for kv in server.attributes}
    assert attributes["http.route"].string_value == "/users/{id}"
    assert attributes["http.response.status_code"].int_value == 200
    resource = {kv.key: kv.value for kv in consumer.traces[0].resource_spans[0].resource.attributes}
    assert resource["service.name"].string_value == "sdk-test"
    assert resource["process.pid"].int_value == 1234


def _data_points(consumer: RecordingConsumer) -> int:
    return sum(
        len(metric.histogram.data_points)
        for request in consumer.metrics
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    )


def _check_histogram(consumer: RecordingConsumer) -> None:
    assert consumer.wait_for(lambda: len(consumer.metrics) >= 1)
    metric = consumer.metrics[0].resource_metrics[0].scope_metrics[0].metrics[0]
    assert metric.name == "http.server.request.duration" and metric.unit == "s"
    point = metric.histogram.data_points[0]
    assert point.count == 3 and point.sum == pytest.approx(0.324)
    assert sum(point.bucket_counts) == 3 and len(point.bucket_counts) == len(point.explicit_bounds) + 1


@pytest.mark.parametrize("compression", [None, grpc.Compression.Gzip], ids=["plain", "gzip"])
def test_grpc_sdk_exporters(compression: grpc.Compression | None) -> None:
    with running_receiver(http_endpoint=None) as (receiver, consumer):
        endpoint = receiver.grpc_address
        _emit_spans(GrpcSpanExporter(endpoint=endpoint, insecure=True, compression=compression))
        _check_spans(consumer)
        _emit_metrics(GrpcMetricExporter(endpoint=endpoint, insecure=True, compression=compression))
        _check_histogram(consumer)
        signals = receiver.status()["grpc"]["signals"]
        assert signals["traces"]["items_accepted"] == 2
        # force_flush and shutdown each export the cumulative point: count what arrived.
        assert signals["metrics"]["items_accepted"] == _data_points(consumer) >= 1
        assert signals["traces"]["errors"] == {}


@pytest.mark.parametrize(
    "compression", [HttpCompression.NoCompression, HttpCompression.Gzip, HttpCompression.Deflate], ids=lambda c: c.value
)
def test_http_sdk_exporters(compression: HttpCompression) -> None:
    with running_receiver(grpc_endpoint=None) as (receiver, consumer):
        base = f"http://{receiver.http_address}"
        _emit_spans(HttpSpanExporter(endpoint=f"{base}/v1/traces", compression=compression))
        _check_spans(consumer)
        _emit_metrics(HttpMetricExporter(endpoint=f"{base}/v1/metrics", compression=compression))
        _check_histogram(consumer)
        signals = receiver.status()["http"]["signals"]
        assert signals["traces"]["items_accepted"] == 2 and signals["traces"]["bytes_in"] > 0


def test_http_exporter_retries_after_429_and_nothing_is_lost() -> None:
    refusals = {"left": 1}

    def refuse_once(signal: str) -> ConsumeResult | None:
        if refusals["left"]:
            refusals["left"] -= 1
            raise QueueFullError("queue holds 100000 rows", retry_after=0.2)
        return None

    with running_receiver(RecordingConsumer(refuse_once), grpc_endpoint=None, retry_after=1.0) as (receiver, consumer):
        _emit_spans(HttpSpanExporter(endpoint=f"http://{receiver.http_address}/v1/traces", timeout=10))
        # The first span export was refused with 429 and retried after Retry-After; both spans arrive once.
        _check_spans(consumer)
        traces = receiver.status()["http"]["signals"]["traces"]
        assert traces["errors"] == {"429": 1}
        assert traces["items_refused"] == 1 and traces["items_accepted"] == 2


def test_grpc_exporter_retries_after_resource_exhausted_with_retry_info() -> None:
    refusals = {"left": 1}

    def refuse_once(signal: str) -> ConsumeResult | None:
        if refusals["left"]:
            refusals["left"] -= 1
            raise QueueFullError("queue holds 100000 rows", retry_after=0.2)
        return None

    with running_receiver(RecordingConsumer(refuse_once), http_endpoint=None, retry_after=0.5) as (receiver, consumer):
        _emit_spans(GrpcSpanExporter(endpoint=receiver.grpc_address, insecure=True, timeout=10))
        # The SDK retries RESOURCE_EXHAUSTED only when the server sent RetryInfo.
        _check_spans(consumer)
        traces = receiver.status()["grpc"]["signals"]["traces"]
        assert traces["errors"] == {"RESOURCE_EXHAUSTED": 1}
        assert traces["items_accepted"] == 2
