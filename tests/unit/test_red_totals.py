"""RedTotals: cumulative histograms from stored delta rows, monotonic, with the right names and labels."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from coral_ebpf.storage.schema import GRPC_METRICS, HTTP_METRICS, arrow_array, arrow_schema
from coral_ebpf.telemetry.exposition import Histogram, MetricFamily
from coral_ebpf.telemetry.red_totals import EXPONENTIAL_FALLBACK_BOUNDS, RED_FAMILY_NAMES, RedTotals

BOUNDS = [0.005, 0.1, 1.0]


def _table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    schema = arrow_schema(name)
    defaults: dict[str, Any] = {
        "timestamp": 1_790_000_000_000_000_000,
        "start_time": 1_790_000_000_000_000_000,
        "agent_id": "a",
        "resource_id": 1,
        "service_name": "shop",
        "metric_name": "m",
        "side": "server",
        "unit": "s",
        "source_temporality": "delta",
        "bounds_s": BOUNDS,
    }
    columns = {
        field.name: arrow_array([{**defaults, **row}.get(field.name) for row in rows], field.type) for field in schema
    }
    return pa.table(columns, schema=schema)


def _http(counts: list[int], total: float, **row: Any) -> dict[str, Any]:
    return {
        "http_method": "GET",
        "http_route": "/users/{id}",
        "http_status_code": 200,
        "bucket_counts": counts,
        "count": sum(counts),
        "sum_s": total,
        **row,
    }


def _family(totals: RedTotals, name: str) -> MetricFamily:
    return next(family for family in totals.families() if family.name == name)


def _only(family: MetricFamily) -> Histogram:
    assert len(family.histograms) == 1
    return family.histograms[0]


def test_deltas_accumulate_into_one_cumulative_series() -> None:
    totals = RedTotals()
    totals.observe({HTTP_METRICS.name: _table(HTTP_METRICS.name, [_http([1, 2, 0, 0], 0.2)])})
    totals.observe({HTTP_METRICS.name: _table(HTTP_METRICS.name, [_http([0, 1, 1, 1], 3.0)])})
    histogram = _only(_family(totals, "http_server_request_duration_seconds"))
    assert list(histogram.cumulative) == [1, 4, 5, 6] and histogram.count == 6
    assert histogram.sum == 3.2
    assert dict(histogram.labels) == {
        "service_name": "shop",
        "service_namespace": "",
        "http_request_method": "GET",
        "http_route": "/users/{id}",
        "http_response_status_code": "200",
        "error_type": "",
    }


def test_sides_labels_and_protocols_make_separate_series() -> None:
    totals = RedTotals()
    totals.observe(
        {
            HTTP_METRICS.name: _table(
                HTTP_METRICS.name,
                [
                    _http([1, 0, 0, 0], 0.001),
                    _http([1, 0, 0, 0], 0.001, side="client"),
                    _http([0, 1, 0, 0], 0.05, http_status_code=500),
                ],
            ),
            GRPC_METRICS.name: _table(
                GRPC_METRICS.name,
                [
                    {
                        "grpc_method": "/a.B/C",
                        "grpc_status_code": 0,
                        "bucket_counts": [0, 0, 3, 0],
                        "count": 3,
                        "sum_s": 0.9,
                    }
                ],
            ),
        }
    )
    assert len(_family(totals, "http_server_request_duration_seconds").histograms) == 2
    assert _only(_family(totals, "http_client_request_duration_seconds")).count == 1
    rpc = _only(_family(totals, "rpc_server_duration_seconds"))
    assert dict(rpc.labels)["rpc_method"] == "/a.B/C" and dict(rpc.labels)["rpc_grpc_status_code"] == "0"
    assert {family.name for family in totals.families()} >= set(RED_FAMILY_NAMES)


def test_other_bounds_are_folded_in_without_losing_counts() -> None:
    totals = RedTotals()
    totals.observe({HTTP_METRICS.name: _table(HTTP_METRICS.name, [_http([1, 0, 0, 0], 0.001)])})
    # Buckets (<=0.05, <=0.5, >0.5): 0.05 goes to <=0.1, 0.5 to <=1.0, the rest to +Inf.
    other = _http([2, 3, 4], 9.0, bounds_s=[0.05, 0.5])
    totals.observe({HTTP_METRICS.name: _table(HTTP_METRICS.name, [other])})
    histogram = _only(_family(totals, "http_server_request_duration_seconds"))
    assert list(histogram.cumulative) == [1, 3, 6, 10]


def test_counters_never_go_down_and_overflow_is_counted() -> None:
    totals = RedTotals(max_series=1)
    totals.observe({HTTP_METRICS.name: _table(HTTP_METRICS.name, [_http([1, 0, 0, 0], 0.001)])})
    totals.observe({HTTP_METRICS.name: _table(HTTP_METRICS.name, [_http([1, 0, 0, 0], 0.001, http_route="/b")])})
    assert _only(_family(totals, "http_server_request_duration_seconds")).count == 1
    overflow = _family(totals, "coral_ebpf_red_series_overflow")
    assert overflow.samples[0].value == 1


def test_other_tables_and_malformed_rows_are_ignored() -> None:
    totals = RedTotals()
    totals.observe({"otel_histograms": pa.table({"x": [1]})})
    bad = _http([1, 0], 0.1)  # two buckets for three bounds
    totals.observe({HTTP_METRICS.name: _table(HTTP_METRICS.name, [bad])})
    assert _family(totals, "http_server_request_duration_seconds").histograms == []


def test_exponential_rows_are_folded_into_the_default_bounds() -> None:
    totals = RedTotals()
    # Scale 0: (1 ms-ish) index -10 is (0.98 ms, 1.95 ms]; index 3 is (8, 16] s: above every default bound.
    row = _http(
        [3],
        5.0,
        bounds_s=[],
        exp_scale=0,
        exp_zero_count=1,
        exp_zero_threshold_s=0.0,
        exp_positive_offset=-10,
        exp_positive_counts=[2] + [0] * 12 + [1],
        exp_negative_offset=0,
        exp_negative_counts=[],
    )
    row["count"] = 4
    totals.observe({HTTP_METRICS.name: _table(HTTP_METRICS.name, [row])})
    histogram = _only(_family(totals, "http_server_request_duration_seconds"))
    assert tuple(histogram.bounds) == EXPONENTIAL_FALLBACK_BOUNDS
    # The zero bucket (<= 0) and the two ~1 ms requests are at or below 5 ms; the 8-16 s one only in +Inf.
    cumulative = list(histogram.cumulative)
    assert cumulative[0] == 3 and cumulative[-2] == 3 and cumulative[-1] == 4
