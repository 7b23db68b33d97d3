"""Agents with the pull API, fed by real OTLP senders (the OpenTelemetry SDK), for the colony tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from coral_ebpf.pullapi._generated import agent_pb2 as pb
from coral_ebpf.pullapi._generated import agent_pb2_grpc as pb_grpc
from tests.helpers import beyla_otlp
from tests.helpers.agent_process import AgentProcess

BOUNDS = beyla_otlp.BEYLA_DURATION_BUCKETS
# Fast-starting agents: no discovery, no RED engine of their own (the data comes over OTLP).
QUIET = {
    "storage": {"flush_interval": "100ms"},
    "discovery": {"enabled": False},
    "beyla": {"enabled": True},
    "red": {"engine": "beyla"},
    "colony_api": {"endpoint": "127.0.0.1:0"},
}


def pull_agent(root: Path, agent_id: str, settings: Mapping[str, Any] | None = None) -> AgentProcess:
    from tests.helpers.agent_process import merge

    return AgentProcess(root, merge(merge(QUIET, {"agent_id": agent_id}), settings or {}))


def pull_address(agent: AgentProcess) -> str:
    return str(agent.status()["colony_api"]["address"])


def send_http(agent: AgentProcess, service: str, requests: Mapping[tuple[str, str, int], tuple[int, float]]) -> int:
    """Record `requests` ((method, route, status) -> (count, seconds)) with the SDK, export once over
    OTLP/gRPC as deltas; the number of requests sent."""
    proto = beyla_otlp.beyla_resource(service, pid=4242)
    resource = Resource({kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
                         for kv in proto.attributes})
    exporter = OTLPMetricExporter(
        endpoint=agent.grpc_address(),
        insecure=True,
        timeout=20,
        preferred_temporality={Histogram: AggregationTemporality.DELTA},
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    view = View(instrument_type=Histogram, aggregation=ExplicitBucketHistogramAggregation(BOUNDS))
    provider = MeterProvider(resource=resource, metric_readers=[reader], views=[view])
    histogram = provider.get_meter("github.com/grafana/beyla/v3").create_histogram(
        "http.server.request.duration", unit="s"
    )
    total = 0
    for (method, route, status), (count, seconds) in requests.items():
        attributes = beyla_otlp.http_server_attributes(proto, method, route, status)
        for _ in range(count):
            histogram.record(seconds, attributes)
        total += count
    assert provider.force_flush(30_000)
    provider.shutdown()
    return total


def send_spans(agent: AgentProcess, service: str, count: int) -> None:
    """`count` server spans, one trace each, exported over OTLP/gRPC."""
    resource = Resource({"service.name": service, "process.pid": 4242, "telemetry.sdk.name": "beyla"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=agent.grpc_address(), insecure=True)))
    tracer = provider.get_tracer("github.com/grafana/beyla/v3")
    for index in range(count):
        with tracer.start_as_current_span(f"GET /item/{index % 3}", kind=SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", "GET")
            span.set_attribute("http.response.status_code", 200)
    provider.shutdown()


def query(address: str, request: pb.QueryEbpfMetricsRequest, **call: Any) -> pb.QueryEbpfMetricsResponse:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AgentServiceStub(channel)
        response: pb.QueryEbpfMetricsResponse = stub.QueryEbpfMetrics(request, timeout=20, **call)
        return response
