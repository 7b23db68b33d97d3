"""TransformProcessor: partial success, rejections with reasons, metrics routing, logs, sources."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import HistogramDataPoint, Metric, NumberDataPoint
from opentelemetry.proto.trace.v1.trace_pb2 import Span

import coral_ebpf.storage.writer as writer_module
from coral_ebpf.consumer import QueueFullError
from coral_ebpf.storage import inserts
from coral_ebpf.storage.writer import Storage
from coral_ebpf.transform.processor import TransformProcessor
from tests.helpers.beyla_otlp import (
    BEYLA_DURATION_BUCKETS,
    BEYLA_SIZE_BUCKETS,
    CUMULATIVE,
    DELTA,
    SECOND_NS,
    CumulativeHistogram,
    beyla_resource,
    grpc_server_attributes,
    http_server_attributes,
    http_server_span,
    key_values,
    metrics_request,
    new_ids,
    sql_client_attributes,
    trace_request,
)
from tests.helpers.datapath import data_path

NOW = time.time_ns()
RESOURCE = beyla_resource("checkout", pid=777, namespace="shop")


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[tuple[Storage, TransformProcessor]]:
    with data_path(tmp_path) as parts:
        yield parts


def query(storage: Storage, sql: str) -> list[tuple[Any, ...]]:
    storage.flush()
    return storage.reader().execute(sql).fetchall()


def test_spans_keep_every_field(pipeline: tuple[Storage, TransformProcessor]) -> None:
    storage, processor = pipeline
    trace_id, root_id = new_ids()
    _, child_id = new_ids()
    root = http_server_span(trace_id, root_id, start_ns=NOW, duration_ns=2_500_000, status=503, route="/pay")
    child = Span(
        trace_id=trace_id,
        span_id=child_id,
        parent_span_id=root_id,
        name="/shop.Cart/Add",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=NOW + 10,
        end_time_unix_nano=NOW + 1010,
        trace_state="k=v",
        attributes=key_values({"rpc.method": "/shop.Cart/Add", "rpc.system": "grpc", "rpc.grpc.status_code": 14}),
    )
    child.status.code = child.status.STATUS_CODE_ERROR
    child.status.message = "upstream unavailable"
    child.events.add(time_unix_nano=NOW + 500, name="exception").attributes.extend(
        key_values({"exception.type": "IOError"})
    )
    assert processor.consume_traces(trace_request(RESOURCE, [root, child])).rejected == 0
    rows = query(
        storage,
        "SELECT trace_id, span_id, parent_span_id, span_name, span_kind, status_code, status_message, "
        "http_status_code, rpc_status_code, rpc_method, process_pid, service_name, service_namespace, "
        "service_instance_id, duration_ns, trace_state, events, resource_attributes->>'$.\"host.name\"', "
        "agent_id, telemetry_sdk_name FROM otel_spans ORDER BY start_time",
    )
    assert rows[0][:9] == (trace_id.hex(), root_id.hex(), "", "GET /pay", "SERVER", 2, None, 503, None)
    assert rows[1][:10] == (
        trace_id.hex(),
        child_id.hex(),
        root_id.hex(),
        "/shop.Cart/Add",
        "CLIENT",
        2,
        "upstream unavailable",
        None,
        14,
        "/shop.Cart/Add",
    )
    assert rows[1][10:16] == (777, "checkout", "shop", "testhost:777", 1000, "k=v")
    assert '"exception.type":"IOError"' in rows[1][16]
    assert rows[1][17:] == ("testhost", "test-agent", "beyla")
    assert query(storage, "SELECT count(*) FROM beyla_traces") == [(2,)]


def test_bad_spans_are_rejected_with_reasons_and_the_rest_stored(pipeline: tuple[Storage, TransformProcessor]) -> None:
    storage, processor = pipeline
    good = http_server_span(*new_ids(), start_ns=NOW, duration_ns=1000)
    short_id = http_server_span(b"\x01" * 8, b"\x02" * 8, start_ns=NOW, duration_ns=1000)
    zero_trace = http_server_span(bytes(16), b"\x02" * 8, start_ns=NOW, duration_ns=1000)
    backwards = http_server_span(*new_ids(), start_ns=NOW, duration_ns=0)
    backwards.end_time_unix_nano = NOW - 1
    result = processor.consume_traces(trace_request(RESOURCE, [good, short_id, zero_trace, backwards]))
    assert result.rejected == 3
    for reason in ("invalid id length", "all-zero", "end before start"):
        assert reason in result.message
    assert query(storage, "SELECT count(*) FROM otel_spans") == [(1,)]
    assert processor.status()["spans_rejected"] == 3


def test_red_metrics_go_to_their_tables_with_columns(pipeline: tuple[Storage, TransformProcessor]) -> None:
    storage, processor = pipeline
    start = NOW - 60 * SECOND_NS
    http = CumulativeHistogram("http.server.request.duration", start_ns=start)
    http.record(http_server_attributes(RESOURCE, "GET", "/items/{id}", 200), 0.02, 7)
    old_http = CumulativeHistogram("http.server.duration", start_ns=start)
    old_http.record(http_server_attributes(RESOURCE, "POST", "/items", 500, old_names=True), 0.2, 2)
    grpc = CumulativeHistogram("rpc.server.duration", start_ns=start)
    grpc.record(grpc_server_attributes(RESOURCE, "/shop.Cart/Add", 2, old_names=True), 0.004, 3)
    sql = CumulativeHistogram("db.client.operation.duration", start_ns=start)
    sql.record(sql_client_attributes(RESOURCE, "SELECT", "items", error="42P01"), 0.001, 4)
    client = CumulativeHistogram("http.client.request.duration", start_ns=start)
    client.record(http_server_attributes(RESOURCE, "GET", "/upstream", 404), 0.05, 1)
    metrics = [h.export(NOW) for h in (http, old_http, grpc, sql, client)]
    assert processor.consume_metrics(metrics_request(RESOURCE, metrics)).rejected == 0
    assert query(
        storage,
        "SELECT side, metric_name, http_method, http_route, http_status_code, count, unit, service_name, "
        "service_namespace, len(bucket_counts), bucket_counts[-1], bounds_s[2] FROM beyla_http_metrics ORDER BY count",
    ) == [
        ("client", "http.client.request.duration", "GET", "/upstream", 404, 1, "s", "checkout", "shop", 16, 0, 0.005),
        ("server", "http.server.duration", "POST", "/items", 500, 2, "s", "checkout", "shop", 16, 0, 0.005),
        ("server", "http.server.request.duration", "GET", "/items/{id}", 200, 7, "s", "checkout", "shop", 16, 0, 0.005),
    ]
    assert query(storage, "SELECT grpc_method, grpc_status_code, rpc_system, count FROM beyla_grpc_metrics") == [
        ("/shop.Cart/Add", 2, "grpc", 3)
    ]
    sql_rows = query(
        storage, "SELECT sql_operation, table_name, db_system, error_type, count, side FROM beyla_sql_metrics"
    )
    assert sql_rows == [("SELECT", "items", "postgresql", "42P01", 4, "client")]
    first = query(storage, "SELECT epoch_ns(start_time), sum_s FROM beyla_http_metrics WHERE count = 7")
    assert first == [(pytest.approx(start, abs=1000), pytest.approx(0.14))], "the first point is kept from its start"


def test_milliseconds_are_stored_as_seconds(pipeline: tuple[Storage, TransformProcessor]) -> None:
    storage, processor = pipeline
    histogram = CumulativeHistogram(
        "http.server.request.duration",
        unit="ms",
        bounds=tuple(b * 1000 for b in BEYLA_DURATION_BUCKETS),
        start_ns=NOW - SECOND_NS,
    )
    histogram.record(http_server_attributes(RESOURCE, "GET", "/", 200), 30.0, 2)
    processor.consume_metrics(metrics_request(RESOURCE, [histogram.export(NOW)]))
    assert query(storage, "SELECT unit, sum_s, bounds_s[3], max_s FROM beyla_http_metrics") == [
        ("ms", pytest.approx(0.06), pytest.approx(0.01), pytest.approx(0.03))
    ]


def test_body_sizes_are_kept_in_their_unit(pipeline: tuple[Storage, TransformProcessor]) -> None:
    storage, processor = pipeline
    sizes = CumulativeHistogram(
        "http.server.request.body.size", unit="By", bounds=BEYLA_SIZE_BUCKETS, start_ns=NOW - SECOND_NS
    )
    sizes.record(http_server_attributes(RESOURCE, "POST", "/upload", 200), 300.0, 3)
    processor.consume_metrics(metrics_request(RESOURCE, [sizes.export(NOW)]))
    assert query(storage, "SELECT metric_name, unit, count, sum, bounds[-1] FROM otel_histograms") == [
        ("http.server.request.body.size", "By", 3, 900.0, 8192.0)
    ]


def _gauge(name: str) -> Metric:
    metric = Metric(name=name, unit="1")
    metric.gauge.data_points.append(NumberDataPoint(time_unix_nano=NOW, as_double=1.0))
    return metric


def test_unusable_metric_points_are_rejected_with_reasons(pipeline: tuple[Storage, TransformProcessor]) -> None:
    storage, processor = pipeline
    exponential = Metric(name="http.server.request.duration", unit="s")  # count without any bucket
    exponential.exponential_histogram.aggregation_temporality = CUMULATIVE
    exponential.exponential_histogram.data_points.add(time_unix_nano=NOW, count=1)
    wrong_type = _gauge("rpc.server.call.duration")
    bad_unit = CumulativeHistogram("db.client.operation.duration", unit="By", start_ns=NOW - SECOND_NS)
    bad_unit.record(sql_client_attributes(RESOURCE, "SELECT", "t"), 0.1)
    bad_counts = Metric(name="http.server.request.duration", unit="s")
    bad_counts.histogram.aggregation_temporality = CUMULATIVE
    bad_counts.histogram.data_points.append(
        HistogramDataPoint(time_unix_nano=NOW, count=3, bucket_counts=[1, 1], explicit_bounds=[0.1, 0.2])
    )
    unspecified = Metric(name="http.server.request.duration", unit="s")
    unspecified.histogram.data_points.add(time_unix_nano=NOW, count=0)
    good = CumulativeHistogram("http.server.request.duration", start_ns=NOW - SECOND_NS)
    good.record(http_server_attributes(RESOURCE, "GET", "/ok", 200), 0.01)
    request = metrics_request(
        RESOURCE,
        [
            exponential,
            wrong_type,
            bad_unit.export(NOW),
            bad_counts,
            unspecified,
            good.export(NOW),
            _gauge("process.cpu.utilization"),
        ],
    )
    result = processor.consume_metrics(request)
    assert result.rejected == 5
    for reason in (
        "count 1 differs from zero_count plus the bucket counts (0)",
        "must be a histogram or an exponential histogram, got gauge",
        "is not a time unit",
        "bucket counts for 2 bounds",
        "aggregation_temporality is unspecified",
    ):
        assert reason in result.message
    assert query(storage, "SELECT http_route FROM beyla_http_metrics") == [("/ok",)]
    status = processor.status()
    assert status["metric_points_rejected"] == 5
    assert status["metrics_not_stored"] == {"gauge process.cpu.utilization": 1}


def test_delta_temporality_is_stored_as_sent_and_retries_dropped(pipeline: tuple[Storage, TransformProcessor]) -> None:
    storage, processor = pipeline
    metric = Metric(name="http.server.request.duration", unit="s")
    metric.histogram.aggregation_temporality = DELTA
    metric.histogram.data_points.append(
        HistogramDataPoint(
            attributes=key_values(http_server_attributes(RESOURCE, "GET", "/d", 200)),
            start_time_unix_nano=NOW - 5 * SECOND_NS,
            time_unix_nano=NOW,
            count=4,
            sum=0.4,
            bucket_counts=[0, 0, 0, 0, 0, 0, 4] + [0] * 9,
            explicit_bounds=list(BEYLA_DURATION_BUCKETS),
        )
    )
    request = metrics_request(RESOURCE, [metric])
    processor.consume_metrics(request)
    processor.consume_metrics(request)
    assert query(storage, "SELECT count, source_temporality FROM beyla_http_metrics") == [(4, "delta")]


def test_cumulative_state_is_not_advanced_by_a_refused_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real_insert = inserts.insert_table  # what the writer imported, before the patch

    def stalled(*args: Any, **kwargs: Any) -> int:
        release.wait(60)
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(writer_module, "insert_table", stalled)
    with data_path(tmp_path, queue_max_batches=1, flush_interval="0s") as (storage, processor):
        histogram = CumulativeHistogram("http.server.request.duration", start_ns=NOW - 100 * SECOND_NS)
        attributes = http_server_attributes(RESOURCE, "GET", "/c", 200)
        histogram.record(attributes, 0.01, 10)
        processor.consume_metrics(metrics_request(RESOURCE, [histogram.export(NOW - 30 * SECOND_NS)]))
        # The stalled writer holds that batch; it still fills the one slot.
        histogram.record(attributes, 0.01, 5)
        second = metrics_request(RESOURCE, [histogram.export(NOW - 15 * SECOND_NS)])
        with pytest.raises(QueueFullError):
            processor.consume_metrics(second)
        release.set()
        storage.flush()
        processor.consume_metrics(second)  # the sender's retry
        assert query(storage, "SELECT count FROM beyla_http_metrics ORDER BY timestamp") == [(10,), (5,)]


def test_logs_are_accepted_and_counted(pipeline: tuple[Storage, TransformProcessor]) -> None:
    _, processor = pipeline
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.CopyFrom(beyla_resource("api", sdk_name="opentelemetry"))
    resource_logs.scope_logs.add().log_records.add(body={"string_value": "hello"})
    assert processor.consume_logs(request).rejected == 0
    status = processor.status()
    assert status["log_records_accepted_not_stored"] == 1
    assert status["sources"]["opentelemetry"]["log_records"] == 1


def test_sources_track_when_each_sdk_last_sent(pipeline: tuple[Storage, TransformProcessor]) -> None:
    _, processor = pipeline
    assert processor.last_seen("beyla") is None
    before = time.time()
    processor.consume_traces(trace_request(RESOURCE, [http_server_span(*new_ids(), start_ns=NOW, duration_ns=1)]))
    engine = beyla_resource("api", sdk_name="coral-ebpf")
    processor.consume_traces(trace_request(engine, [http_server_span(*new_ids(), start_ns=NOW, duration_ns=1)]))
    seen = processor.last_seen("beyla")
    assert seen is not None and before <= seen <= time.time()
    assert processor.last_seen("coral-ebpf") is not None
    sources = processor.status()["sources"]
    assert sources["beyla"]["spans"] == 1 and sources["coral-ebpf"]["spans"] == 1


def test_serialized_fast_path_matches_the_decoded_one(pipeline: tuple[Storage, TransformProcessor]) -> None:
    storage, processor = pipeline
    spans = [http_server_span(*new_ids(), start_ns=NOW, duration_ns=1000) for _ in range(3)]
    body = trace_request(RESOURCE, spans).SerializeToString()
    assert processor.consume_traces_serialized(body).rejected == 0
    assert query(storage, "SELECT count(*), count(DISTINCT span_id), min(http_route) FROM otel_spans") == [
        (3, 3, "/api/users/{id}")
    ]


def test_serialized_fast_path_rejects_only_the_undecodable_span(pipeline: tuple[Storage, TransformProcessor]) -> None:
    storage, processor = pipeline
    from coral_ebpf.otlp.wire import LazyTraceRequest

    lazy = LazyTraceRequest.FromString(
        trace_request(
            RESOURCE, [http_server_span(*new_ids(), start_ns=NOW, duration_ns=1) for _ in range(2)]
        ).SerializeToString()
    )
    lazy.resource_spans[0].scope_spans[0].spans[0].attributes.append(b"\x0a\x05ab")  # truncated KeyValue
    result = processor.consume_traces_serialized(lazy.SerializeToString())
    assert result.rejected == 1 and "undecodable" in result.message
    assert query(storage, "SELECT count(*) FROM otel_spans") == [(1,)]


def test_serialized_fast_path_raises_decode_error_for_garbage(pipeline: tuple[Storage, TransformProcessor]) -> None:
    _, processor = pipeline
    with pytest.raises(DecodeError):
        processor.consume_traces_serialized(b"\x0a\xff\xff\xff")


def _exponential_metric(
    start_ns: int, time_ns: int, scale: int, offset: int, counts: list[int], *, unit: str = "s"
) -> Metric:
    metric = Metric(name="http.server.request.duration", unit=unit)
    metric.exponential_histogram.aggregation_temporality = CUMULATIVE
    point = metric.exponential_histogram.data_points.add(
        start_time_unix_nano=start_ns, time_unix_nano=time_ns, count=sum(counts), scale=scale, sum=1.0
    )
    point.attributes.extend(key_values(http_server_attributes(RESOURCE, "GET", "/fast", 200)))
    point.positive.offset = offset
    point.positive.bucket_counts.extend(counts)
    return metric


def test_cumulative_exponential_points_are_stored_as_deltas_across_a_scale_change(
    pipeline: tuple[Storage, TransformProcessor],
) -> None:
    storage, processor = pipeline
    start = NOW - 10 * SECOND_NS
    # Scale 3, indexes -80 and -79; then the SDK lowered the scale to 2 (indexes -40 and -39 hold the same values).
    first = _exponential_metric(start, NOW - 2 * SECOND_NS, 3, -80, [2, 1])
    second = _exponential_metric(start, NOW - SECOND_NS, 2, -40, [5, 1])
    for metric in (first, second):
        assert processor.consume_metrics(metrics_request(RESOURCE, [metric])).rejected == 0
    rows = query(
        storage,
        "SELECT count, bounds_s, bucket_counts, exp_scale, exp_positive_offset, exp_positive_counts "
        "FROM beyla_http_metrics ORDER BY timestamp",
    )
    assert rows == [(3, [], [3], 3, -80, [2, 1]), (3, [], [3], 2, -40, [2, 1])]


def test_an_exponential_point_in_milliseconds_is_stored_in_seconds(
    pipeline: tuple[Storage, TransformProcessor],
) -> None:
    storage, processor = pipeline
    # Index 23 at scale 2 is (53.8, 64] ms; its midpoint 58.7 ms is 0.0587 s, index -17 at scale 2.
    metric = _exponential_metric(NOW - SECOND_NS, NOW, 2, 23, [4], unit="ms")
    assert processor.consume_metrics(metrics_request(RESOURCE, [metric])).rejected == 0
    assert query(storage, "SELECT exp_positive_offset, exp_positive_counts, sum_s FROM beyla_http_metrics") == [
        (-17, [4], 0.001)
    ]


def test_an_exponential_histogram_under_another_name_goes_to_otel_histograms(
    pipeline: tuple[Storage, TransformProcessor],
) -> None:
    storage, processor = pipeline
    metric = Metric(name="http.server.request.body.size", unit="By")
    metric.exponential_histogram.aggregation_temporality = DELTA
    point = metric.exponential_histogram.data_points.add(
        start_time_unix_nano=NOW - SECOND_NS, time_unix_nano=NOW, count=3, zero_count=1, zero_threshold=0.5, scale=0
    )
    point.positive.offset = 9  # (512, 1024] bytes
    point.positive.bucket_counts.append(2)
    assert processor.consume_metrics(metrics_request(RESOURCE, [metric])).rejected == 0
    rows = query(
        storage,
        "SELECT metric_name, unit, count, exp_scale, exp_zero_count, exp_zero_threshold, exp_positive_offset, "
        "exp_positive_counts FROM otel_histograms",
    )
    assert rows == [("http.server.request.body.size", "By", 3, 0, 1, 0.5, 9, [2])]
