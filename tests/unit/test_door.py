"""Values that could break storage or queries are rejected at the door; what was stored never breaks a query."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, HistogramDataPoint, Metric

from coral_ebpf.query.params import RedParams, TraceParams
from coral_ebpf.query.red import red_summary
from coral_ebpf.query.traces import find_traces
from coral_ebpf.storage.retention import delete_expired
from coral_ebpf.storage.writer import Storage
from coral_ebpf.transform.door import LATEST_STORABLE_NS, MAX_COUNT, TimeWindow, count_reason, float_reason
from coral_ebpf.transform.histograms import read_point
from coral_ebpf.transform.processor import TransformProcessor
from tests.helpers.beyla_otlp import (
    CUMULATIVE,
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

NOW = time.time_ns()
DAY_NS = 86400 * SECOND_NS
RESOURCE = beyla_resource("door", pid=31)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[tuple[Storage, TransformProcessor]]:
    with data_path(tmp_path) as parts:
        yield parts


# -- validators ------------------------------------------------------------------------------


def test_time_window_names_the_field_and_the_setting() -> None:
    window = TimeWindow.now(3600.0, clock=lambda: 1_000_000.0)
    assert window.ceiling_ns == 1_003_600 * SECOND_NS
    assert window.reason("time_unix_nano", 1_003_600 * SECOND_NS) is None
    late = window.reason("time_unix_nano", 1_003_600 * SECOND_NS + 1)
    assert late is not None and "time_unix_nano" in late and "otlp.max_time_ahead" in late
    assert window.reason("time_unix_nano", 0) == "time_unix_nano is missing"


def test_time_window_never_passes_what_cannot_be_stored() -> None:
    window = TimeWindow.now(float("inf"))
    assert window.ceiling_ns == LATEST_STORABLE_NS
    reason = window.reason("end_time_unix_nano", INT64_MAX)
    assert reason is not None and "2262" in reason
    assert TimeWindow.now(1e12).ceiling_ns == LATEST_STORABLE_NS


def test_count_and_float_limits() -> None:
    assert count_reason("count", MAX_COUNT) is None
    assert "count" in str(count_reason("count", MAX_COUNT + 1))
    assert float_reason("sum", 1.5) is None and float_reason("sum", None) is None
    for value in (float("nan"), float("inf"), float("-inf")):
        assert float_reason("min", value) == "min is not finite"


def _point(**fields: object) -> HistogramDataPoint:
    values = {"time_unix_nano": NOW, "count": 1, "bucket_counts": [1, 0], "explicit_bounds": [1.0], **fields}
    return HistogramDataPoint(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"time_unix_nano": INT64_MAX}, "time_unix_nano is"),
        ({"time_unix_nano": UINT64_MAX}, "time_unix_nano is"),
        ({"time_unix_nano": NOW + 2 * DAY_NS}, "otlp.max_time_ahead"),
        ({"start_time_unix_nano": NOW + 1}, "start_time_unix_nano is after time_unix_nano"),
        ({"count": 2**63, "bucket_counts": [2**63, 0]}, "count is 2^63 or more"),
        ({"count": UINT64_MAX, "bucket_counts": [UINT64_MAX, 0]}, "count is 2^63 or more"),
        ({"sum": float("nan")}, "sum is not finite"),
        ({"min": float("-inf")}, "min is not finite"),
        ({"max": float("inf")}, "max is not finite"),
    ],
)
def test_read_point_rejects_what_overflows(fields: dict[str, object], reason: str) -> None:
    result = read_point(_point(**fields))
    assert isinstance(result, str) and reason in result


def test_read_point_accepts_the_edges() -> None:
    edge = read_point(_point(count=MAX_COUNT, bucket_counts=[MAX_COUNT, 0], time_unix_nano=NOW + DAY_NS - SECOND_NS))
    assert not isinstance(edge, str) and edge.count == MAX_COUNT


# -- through the processor into DuckDB --------------------------------------------------------


def _histogram(temporality: AggregationTemporality.ValueType, points: list[HistogramDataPoint]) -> Metric:
    metric = Metric(name="http.server.request.duration", unit="s")
    metric.histogram.aggregation_temporality = temporality
    metric.histogram.data_points.extend(points)
    return metric


def _route_point(route: str, **fields: object) -> HistogramDataPoint:
    attributes = key_values(http_server_attributes(RESOURCE, "GET", route, 200))
    values = {
        "start_time_unix_nano": NOW - SECOND_NS,
        "time_unix_nano": NOW,
        "count": 2,
        "sum": 0.02,
        "bucket_counts": [2, 0],
        "explicit_bounds": [0.05],
        **fields,
    }
    return HistogramDataPoint(attributes=attributes, **values)  # type: ignore[arg-type]


def test_poison_spans_are_rejected_and_siblings_stored(pipeline: tuple[Storage, TransformProcessor]) -> None:
    storage, processor = pipeline
    spans = []
    for start, duration in ((NOW, 1000), (INT64_MAX - 10, 5), (UINT64_MAX - 10, 5), (NOW + 2 * DAY_NS, 5)):
        trace_id, span_id = new_ids()
        spans.append(http_server_span(trace_id, span_id, start_ns=start, duration_ns=duration))
    trace_id, span_id = new_ids()
    overflowing_end = http_server_span(trace_id, span_id, start_ns=NOW, duration_ns=1)
    overflowing_end.end_time_unix_nano = UINT64_MAX
    spans.append(overflowing_end)
    for result in (
        processor.consume_traces(trace_request(RESOURCE, spans)),
        processor.consume_traces_serialized(trace_request(RESOURCE, spans).SerializeToString()),
    ):
        assert result.rejected == 4
        assert "end_time_unix_nano is more than 86400 s ahead" in result.message
    storage.flush()
    # The second request repeats the same span ids (a retry): it is stored once.
    rows = storage.reader().execute("SELECT count(*), max(epoch_us(end_time)) FROM otel_spans_raw").fetchone()
    assert rows is not None and rows[0] == 1 and abs(rows[1] - (NOW + 1000) / 1000) <= 1
    found = find_traces(storage.reader(), TraceParams.from_dict({"since": "1h"}))
    assert len(found["traces"]) == 1


@pytest.mark.parametrize("temporality", [CUMULATIVE, DELTA])
def test_poison_points_are_rejected_and_siblings_stored(
    pipeline: tuple[Storage, TransformProcessor], temporality: AggregationTemporality.ValueType
) -> None:
    storage, processor = pipeline
    points = [
        _route_point("/good"),
        _route_point("/future", time_unix_nano=INT64_MAX),
        _route_point("/huge", count=UINT64_MAX, bucket_counts=[UINT64_MAX, 0]),
        _route_point("/nan", sum=float("nan")),
    ]
    result = processor.consume_metrics(metrics_request(RESOURCE, [_histogram(temporality, points)]))
    assert result.rejected == 3
    for reason in ("time_unix_nano is more than", "count is 2^63 or more", "sum is not finite"):
        assert reason in result.message
    storage.flush()
    stored = storage.reader().execute("SELECT http_route, count FROM beyla_http_metrics").fetchall()
    assert stored == [("/good", 2)]
    summary = red_summary(storage.reader(), "http", RedParams.from_dict({"since": "1h"}))
    assert summary["overall"]["requests"] == 2


def test_max_time_ahead_is_honoured(tmp_path: Path) -> None:
    with data_path(tmp_path) as (storage, default_processor):
        default_processor.stop(1)
        processor = TransformProcessor(storage, agent_id="a", max_time_ahead=60.0)
        processor.start()
        result = processor.consume_metrics(
            metrics_request(
                RESOURCE, [_histogram(DELTA, [_route_point("/late", time_unix_nano=time.time_ns() + 120 * SECOND_NS)])]
            )
        )
        assert result.rejected == 1 and "more than 60 s ahead" in result.message


# -- queries and retention over rows an older version could have stored ------------------------


LEGACY = (("now()::TIMESTAMP", UINT64_MAX), ("'infinity'::TIMESTAMP", 1))


def _insert_legacy_rows(storage: Storage, rows: tuple[tuple[str, int], ...] = LEGACY) -> None:
    """Rows the door rejects today (by default a count of 2^64-1 and a time stored as infinity)."""
    connection = storage.reader()
    columns = (
        "timestamp, start_time, agent_id, resource_id, service_name, metric_name, side, unit, count, "
        "bounds_s, bucket_counts, source_temporality"
    )
    for timestamp, route_count in rows:
        connection.execute(
            f"INSERT INTO beyla_http_metrics ({columns}) VALUES "
            f"({timestamp}, now()::TIMESTAMP - INTERVAL 1 MINUTE, 'a', 1, 'legacy', 'http.server.request.duration',"
            f" 'server', 's', {route_count}::UBIGINT, [0.05], [{route_count}::UBIGINT, 0], 'delta')"
        )


def test_queries_survive_huge_counts_and_infinite_times(pipeline: tuple[Storage, TransformProcessor]) -> None:
    storage, processor = pipeline
    processor.consume_metrics(metrics_request(RESOURCE, [_histogram(DELTA, [_route_point("/good")])]))
    storage.flush()
    _insert_legacy_rows(storage)
    everything = red_summary(storage.reader(), "http", RedParams.from_dict({"since": "1h"}))
    assert everything["overall"]["requests"] == UINT64_MAX + 2
    missing = red_summary(storage.reader(), "http", RedParams.from_dict({"since": "1h", "service": "nobody"}))
    assert missing["rows"] == []
    legacy = [s for s in missing["services_available"] if s["service"] == "legacy"]
    assert legacy and legacy[0]["last_seen"] is not None  # the finite row's time; infinity is ignored


def test_retention_removes_infinite_and_far_future_rows(pipeline: tuple[Storage, TransformProcessor]) -> None:
    storage, processor = pipeline
    processor.consume_metrics(metrics_request(RESOURCE, [_histogram(DELTA, [_route_point("/good")])]))
    storage.flush()
    _insert_legacy_rows(storage)
    _insert_legacy_rows(storage, (("'2200-01-01'::TIMESTAMP", 1),))
    connection = storage.reader()
    now = time.time()
    deleted = delete_expired(connection, now - 3600, now + 3600)
    assert deleted["beyla_http_metrics"] == 2  # infinity and 2200; the two current rows stay
    assert connection.execute("SELECT count(*) FROM beyla_http_metrics WHERE NOT isfinite(timestamp)").fetchone() == (
        0,
    )
    # Without a ceiling, infinity still goes (it is never older than any cutoff).
    _insert_legacy_rows(storage)
    assert delete_expired(connection, now - 3600)["beyla_http_metrics"] == 1


def test_a_status_code_outside_the_otel_enum_is_rejected(pipeline: tuple[Storage, TransformProcessor]) -> None:
    """status.code is an open enum on the wire; 70000 used to overflow the SMALLINT column (503 for ever)."""
    storage, processor = pipeline
    spans = []
    for code in (2, 70000, -1):
        trace_id, span_id = new_ids()
        span = http_server_span(trace_id, span_id, start_ns=NOW, duration_ns=10)
        span.status.code = code  # type: ignore[assignment]
        spans.append(span)
    result = processor.consume_traces(trace_request(RESOURCE, spans))
    assert result.rejected == 2 and "status.code is not an OTel status code" in result.message
    storage.flush()
    assert storage.reader().execute("SELECT status_code FROM otel_spans_raw").fetchall() == [(2,)]
