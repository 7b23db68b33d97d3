"""OTLP (Beyla-shaped, and from the real OpenTelemetry SDK) -> TransformProcessor -> DuckDB file -> `coral-ebpf query`.

Requests are serialized and parsed back, as they cross the wire to the receiver; the answers
are read through the real CLI in a subprocess, from the database file the agent wrote.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from coral_ebpf.transform.processor import TransformProcessor
from tests.helpers.agent_process import query_json
from tests.helpers.beyla_otlp import (
    BEYLA_DURATION_BUCKETS,
    SECOND_NS,
    CumulativeHistogram,
    beyla_resource,
    grpc_server_attributes,
    http_server_attributes,
    metrics_request,
    sql_client_attributes,
)
from tests.helpers.datapath import data_path


def over_the_wire(request: Any) -> Any:
    return type(request).FromString(request.SerializeToString())


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nagent_id: it-agent\n")
    return config


def by(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(row[k] for k in keys): row for row in rows}


def push_beyla_metrics(processor: TransformProcessor, now: int) -> None:
    """Three export intervals of a Beyla that restarts after the second (new start_time)."""
    frontend = beyla_resource("frontend", pid=101, namespace="shop")
    cart = beyla_resource("cart", pid=202)
    first_start, second_start = now - 300 * SECOND_NS, now - 40 * SECOND_NS

    http = CumulativeHistogram("http.server.request.duration", start_ns=first_start)
    get_ok = http_server_attributes(frontend, "GET", "/products/{id}", 200)
    get_err = http_server_attributes(frontend, "GET", "/products/{id}", 502)
    http.record(get_ok, 0.003, 30)  # (0, 0.005]
    processor.consume_metrics(over_the_wire(metrics_request(frontend, [http.export(now - 100 * SECOND_NS)])))
    http.record(get_ok, 0.07, 10)  # (0.05, 0.075]
    http.record(get_err, 3.0, 2)  # (2.5, 5]
    processor.consume_metrics(over_the_wire(metrics_request(frontend, [http.export(now - 60 * SECOND_NS)])))
    # Beyla restarted: counting starts again from a new start_time.
    restarted = CumulativeHistogram("http.server.request.duration", start_ns=second_start)
    restarted.record(get_ok, 0.003, 8)
    restarted.record(get_err, 12.0, 1)  # above the last bound: the +Inf bucket
    processor.consume_metrics(over_the_wire(metrics_request(frontend, [restarted.export(now - 20 * SECOND_NS)])))

    legacy = CumulativeHistogram("http.server.duration", start_ns=first_start)  # Beyla <= 1.3
    legacy.record(http_server_attributes(cart, "POST", "/cart", 201, old_names=True), 0.02, 4)

    grpc_new = CumulativeHistogram("rpc.server.call.duration", start_ns=first_start)
    grpc_new.record(grpc_server_attributes(cart, "/shop.Cart/AddItem", "OK"), 0.008, 9)  # type: ignore[arg-type]
    grpc_new.record(grpc_server_attributes(cart, "/shop.Cart/AddItem", "INTERNAL"), 0.3, 1)  # type: ignore[arg-type]
    grpc_old = CumulativeHistogram("rpc.server.duration", start_ns=first_start)
    grpc_old.record(grpc_server_attributes(cart, "/shop.Cart/GetCart", 0, old_names=True), 0.002, 5)
    grpc_old.record(grpc_server_attributes(cart, "/shop.Cart/GetCart", 4, old_names=True), 1.5, 1)

    sql_new = CumulativeHistogram("db.client.operation.duration", start_ns=first_start)
    sql_new.record(sql_client_attributes(cart, "SELECT", "carts"), 0.004, 16)
    sql_new.record(sql_client_attributes(cart, "SELECT", "carts", error="57014"), 0.6, 4)
    sql_old = CumulativeHistogram("sql.client.duration", start_ns=first_start)
    sql_old.record(sql_client_attributes(cart, "UPDATE", "carts", old_names=True), 0.011, 2)
    exported = [h.export(now - 30 * SECOND_NS) for h in (legacy, grpc_new, grpc_old, sql_new, sql_old)]
    processor.consume_metrics(over_the_wire(metrics_request(cart, exported)))


def test_beyla_shaped_metrics_through_the_cli(tmp_path: Path) -> None:
    now = time.time_ns()
    with data_path(tmp_path / "state") as (storage, processor):
        push_beyla_metrics(processor, now)
        storage.flush()
        stored = storage.reader().execute("SELECT count(*), sum(count) FROM beyla_http_metrics").fetchone()
    # frontend: 30 | 10 and 2 | after the restart 8 and 1 -> 5 rows; cart: 1 row of 4
    assert stored == (6, 55)
    config = write_config(tmp_path)

    http = by(query_json(config, "http", "--since", "10m"), "service", "method", "route")
    products = http[("frontend", "GET", "/products/{id}")]
    assert (products["requests"], products["errors"]) == (51, 3)
    assert products["error_rate"] == pytest.approx(3 / 51, abs=1e-6)
    # Summed deltas: 38 in (0, 5ms], 10 in (50, 75ms], 2 in (2.5, 5s], 1 in (10s, +Inf).
    assert products["p50_ms"] == pytest.approx(5 * 25.5 / 38)
    assert products["p95_ms"] == pytest.approx(2500 + 2500 * (0.95 * 51 - 48) / 2)
    assert products["p99_ms"] == pytest.approx(10_000), "a rank in the +Inf bucket gives the largest finite bound"
    assert products["rate_per_s"] == pytest.approx(51 / 300, rel=0.05)
    cart = http[("cart", "POST", "/cart")]
    assert (cart["requests"], cart["errors"], cart["p50_ms"]) == (4, 0, pytest.approx(10 + 15 * 0.5))

    grpc = by(query_json(config, "grpc"), "service", "method")
    assert (grpc[("cart", "/shop.Cart/AddItem")]["requests"], grpc[("cart", "/shop.Cart/AddItem")]["errors"]) == (10, 1)
    assert (grpc[("cart", "/shop.Cart/GetCart")]["requests"], grpc[("cart", "/shop.Cart/GetCart")]["errors"]) == (6, 1)
    assert grpc[("cart", "/shop.Cart/AddItem")]["p50_ms"] == pytest.approx(5 + 5 * 5 / 9)

    sql = by(query_json(config, "sql"), "service", "operation", "table")
    select = sql[("cart", "SELECT", "carts")]
    assert (select["requests"], select["errors"], select["db_system"]) == (20, 4, "postgresql")
    assert select["p50_ms"] == pytest.approx(5 * 10 / 16)
    assert select["p95_ms"] == pytest.approx(500 + 250 * (19 - 16) / 4)
    assert sql[("cart", "UPDATE", "carts")]["requests"] == 2


def sdk_meter_provider(reader: InMemoryMetricReader) -> MeterProvider:
    """An SDK configured like Beyla's exporter: explicit buckets in seconds, cumulative."""
    views = [
        View(instrument_name="*duration", aggregation=ExplicitBucketHistogramAggregation(list(BEYLA_DURATION_BUCKETS)))
    ]
    resource = Resource.create({"service.name": "sdk-api", "service.namespace": "it"})
    return MeterProvider(metric_readers=[reader], resource=resource, views=views)


def collected(reader: InMemoryMetricReader) -> MetricsData:
    data = reader.get_metrics_data()
    assert data is not None, "the SDK collected no metrics"
    return data


def test_real_sdk_metrics_through_the_cli(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    provider = sdk_meter_provider(reader)
    meter = provider.get_meter("it")
    server = meter.create_histogram("http.server.request.duration", unit="s")
    client = meter.create_histogram("rpc.client.call.duration", unit="s")
    route: dict[str, AttributeValue] = {"http.request.method": "GET", "http.route": "/a"}
    ok = {**route, "http.response.status_code": 200}
    failed = {**route, "http.response.status_code": 500}
    with data_path(tmp_path / "state") as (storage, processor):
        for _ in range(10):
            server.record(0.003, ok)
            server.record(0.04, ok)
        client.record(0.02, {"rpc.method": "/up.Stream/Get", "rpc.system.name": "grpc", "rpc.response.status_code": 0})
        first = encode_metrics(collected(reader))
        assert isinstance(first, ExportMetricsServiceRequest)
        processor.consume_metrics(over_the_wire(first))
        for _ in range(5):
            server.record(0.2, failed)
        second = encode_metrics(collected(reader))
        assert second.resource_metrics[0].scope_metrics[0].metrics[0].histogram.aggregation_temporality == 2
        processor.consume_metrics(over_the_wire(second))
        processor.consume_metrics(over_the_wire(second))  # a retried request changes nothing
        storage.flush()
    provider.shutdown()
    config = write_config(tmp_path)

    (row,) = query_json(config, "http")
    assert (row["service"], row["method"], row["route"], row["requests"], row["errors"]) == (
        "sdk-api",
        "GET",
        "/a",
        25,
        5,
    )
    # 10 in (0, 5ms], 10 in (25, 50ms], 5 in (100, 250ms]
    assert row["p50_ms"] == pytest.approx(25 + 25 * 2.5 / 10)
    assert row["p95_ms"] == pytest.approx(100 + 150 * 3.75 / 5)
    assert row["p99_ms"] == pytest.approx(100 + 150 * 4.75 / 5)
    (rpc,) = query_json(config, "grpc", "--side", "client")
    assert (rpc["method"], rpc["requests"], rpc["errors"], rpc["side"]) == ("/up.Stream/Get", 1, 0, "client")


def test_real_sdk_traces_through_the_cli(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-api", "process.pid": os.getpid()}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("it")
    with tracer.start_as_current_span("GET /orders/{id}", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.request.method", "GET")
        root.set_attribute("http.route", "/orders/{id}")
        root.set_attribute("http.response.status_code", 500)
        root.set_status(Status(StatusCode.ERROR, "boom"))
        with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT) as query:
            query.set_attribute("db.system.name", "postgresql")
            query.set_attribute("db.operation.name", "SELECT")
            time.sleep(0.01)
    spans = exporter.get_finished_spans()
    request = encode_spans(spans)
    assert isinstance(request, ExportTraceServiceRequest)
    trace_id = format(spans[0].context.trace_id, "032x")
    with data_path(tmp_path / "state") as (storage, processor):
        assert processor.consume_traces(over_the_wire(request)).rejected == 0
        assert processor.consume_traces(over_the_wire(request)).rejected == 0  # retried: stored once
        storage.flush()
    provider.shutdown()
    config = write_config(tmp_path)
    (trace,) = query_json(config, "traces", "--service", "sdk-api")
    assert trace["trace_id"] == trace_id
    assert (trace["span_count"], trace["status"], trace["root_operation"]) == (2, "ERROR", "GET /orders/{id}")
    assert trace["duration_ms"] >= 10.0
    by_kind = {span["kind"]: span for span in trace["spans"]}
    assert by_kind["SERVER"]["status_message"] == "boom" and by_kind["SERVER"]["http_status_code"] == 500
    assert by_kind["CLIENT"]["parent_span_id"] == by_kind["SERVER"]["span_id"]
    assert by_kind["SERVER"]["process_pid"] == os.getpid()
