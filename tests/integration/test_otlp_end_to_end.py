"""End to end: OTLP exporters -> receiver -> transform -> DuckDB -> the numbers `query` returns."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from coral_ebpf.otlp.receiver import OtlpReceiver
from coral_ebpf.otlp.settings import OtlpSettings
from coral_ebpf.query.dispatch import run_query
from coral_ebpf.storage.writer import Storage
from coral_ebpf.transform.processor import TransformProcessor
from tests.helpers import beyla_payloads
from tests.helpers.datapath import data_path


class Agent:
    """The data path as `coral-ebpf start` wires it, minus the CLI: receiver -> transform -> storage."""

    def __init__(self, storage: Storage, processor: TransformProcessor) -> None:
        self.storage = storage
        self.processor = processor
        settings = OtlpSettings(grpc_endpoint="127.0.0.1:0", http_endpoint="127.0.0.1:0")
        self.receiver = OtlpReceiver(settings, processor)

    def query(self, kind: str, **params: Any) -> dict[str, Any]:
        assert self.storage.flush(30.0)
        with self.storage.reader() as reader:
            return run_query(reader, kind, params)

    def post(self, path: str, body: bytes, content_type: str = "application/x-protobuf") -> http.client.HTTPResponse:
        assert self.receiver.http_address is not None
        host, _, port = self.receiver.http_address.rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=20)
        connection.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        response.read()
        connection.close()
        return response


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    with data_path(tmp_path) as (storage, processor):
        running = Agent(storage, processor)
        running.receiver.start()
        try:
            yield running
        finally:
            running.receiver.stop(5.0)


def _emit(exporter: SpanExporter) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-shop", "process.pid": 77}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("e2e")
    with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER) as server:
        server.set_attribute("http.request.method", "GET")
        server.set_attribute("http.route", "/cart")
        server.set_attribute("http.response.status_code", 500)
        server.set_status(StatusCode.ERROR)
        with tracer.start_as_current_span("SELECT carts", kind=SpanKind.CLIENT):
            pass
    provider.shutdown()


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_spans_are_queryable(agent: Agent, transport: str) -> None:
    if transport == "grpc":
        _emit(GrpcSpanExporter(endpoint=agent.receiver.grpc_address, insecure=True))
    else:
        _emit(HttpSpanExporter(endpoint=f"http://{agent.receiver.http_address}/v1/traces"))
    result = agent.query("traces", service="sdk-shop", with_spans=True)
    (trace,) = result["traces"]
    assert trace["span_count"] == 2 and trace["status"] == "ERROR"
    assert trace["root_operation"] == "GET /cart"
    spans = {span["name"]: span for span in trace["spans"]}
    assert sorted(spans) == ["GET /cart", "SELECT carts"]
    assert spans["GET /cart"]["http_status_code"] == 500 and spans["GET /cart"]["process_pid"] == 77
    assert spans["SELECT carts"]["parent_span_id"] == spans["GET /cart"]["span_id"]


def test_beyla_json_spans_are_queryable_by_trace_id(agent: Agent) -> None:
    start_ns = time.time_ns() - 5_000_000_000
    assert agent.post("/v1/traces", beyla_payloads.traces_json(start_ns), "application/json").status == 200
    result = agent.query("traces", trace_id="5b8efff798038103d269b633813fc60c", with_spans=True)
    (trace,) = result["traces"]
    assert trace["span_count"] == 2 and trace["root_service"] == beyla_payloads.SERVICE
    spans = {span["name"]: span for span in trace["spans"]}
    assert spans["SELECT users"]["parent_span_id"] == "eee19b7ec3c1b174"
    assert spans["SELECT users"]["status"] == "ERROR" and spans["SELECT users"]["status_message"] == "connection reset"
    assert spans["GET /users/{id}"]["process_pid"] == beyla_payloads.PID


def test_beyla_histograms_give_red_numbers(agent: Agent) -> None:
    """Two cumulative exports of the same series: 100 requests each; p50/p95/p99 as histogram_quantile."""
    start_ns = time.time_ns() - 120_000_000_000
    first = beyla_payloads.metrics_request(start_ns=start_ns, elapsed_s=60)
    second = beyla_payloads.metrics_request(start_ns=start_ns, elapsed_s=110)
    for metric in second.resource_metrics[0].scope_metrics[0].metrics:
        for point in metric.histogram.data_points:
            point.count *= 2
            point.sum *= 2
            point.bucket_counts[:] = [2 * c for c in point.bucket_counts]
    assert agent.post("/v1/metrics", first.SerializeToString()).status == 200
    assert agent.post("/v1/metrics", second.SerializeToString()).status == 200
    result = agent.query("http", service=beyla_payloads.SERVICE, since="15m")
    (row,) = result["rows"]
    assert (row["method"], row["route"], row["requests"], row["errors"]) == ("GET", "/users/{id}", 200, 0)
    assert row["p50_ms"] == pytest.approx(20.0)
    assert row["p95_ms"] == pytest.approx(250.0)
    assert row["p99_ms"] == pytest.approx(750.0)
    grpc_rows = agent.query("grpc", service=beyla_payloads.SERVICE, since="15m")["rows"]
    assert [r["requests"] for r in grpc_rows] == [100]


def test_a_stopping_pipeline_answers_503_and_stores_nothing(agent: Agent) -> None:
    agent.processor.stop(5.0)
    response = agent.post("/v1/traces", beyla_payloads.traces_request(time.time_ns()).SerializeToString())
    assert response.status == 503 and int(response.getheader("Retry-After") or 0) >= 1
    assert agent.query("traces", service=beyla_payloads.SERVICE, since="1h")["traces"] == []
    assert agent.receiver.status()["http"]["signals"]["traces"]["items_refused"] == 4


def test_acknowledged_spans_are_all_stored_once(agent: Agent) -> None:
    now_ns = time.time_ns()
    for batch in range(20):
        request = beyla_payloads.traces_request(now_ns - 60_000_000_000)
        for span in request.resource_spans[0].scope_spans[0].spans:
            span.trace_id = batch.to_bytes(4, "big") + span.trace_id[4:]
        assert agent.post("/v1/traces", request.SerializeToString()).status == 200
    assert agent.receiver.status()["http"]["signals"]["traces"]["items_accepted"] == 80
    assert agent.storage.flush(30.0)
    with agent.storage.reader() as reader:
        row = reader.execute(
            "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM otel_spans WHERE service_name = ?",
            [beyla_payloads.SERVICE],
        ).fetchone()
    assert row == (80, 80)
