"""RED and trace queries against hand-computed values."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from coral_ebpf.query.dispatch import run_query
from coral_ebpf.query.params import QueryError
from coral_ebpf.storage.writer import Storage
from tests.helpers.beyla_otlp import (
    SECOND_NS,
    CumulativeHistogram,
    beyla_resource,
    grpc_server_attributes,
    http_server_attributes,
    http_server_span,
    metrics_request,
    sql_client_attributes,
    sql_client_span,
    trace_request,
    window_end,
)
from tests.helpers.datapath import data_path

T = time.time_ns() - 10 * SECOND_NS  # the last export; queries end here
UNTIL = window_end(T)
START = T - 120 * SECOND_NS  # the exporter's start time
CHECKOUT = beyla_resource("checkout", pid=10)
CART = beyla_resource("cart", pid=20)


def _http(storage_processor: Any) -> None:
    _, processor = storage_processor
    server = CumulativeHistogram("http.server.request.duration", start_ns=START)
    items_ok = http_server_attributes(CHECKOUT, "GET", "/items", 200)
    items_err = http_server_attributes(CHECKOUT, "GET", "/items", 503)
    server.record(items_ok, 0.02, 40)
    processor.consume_metrics(metrics_request(CHECKOUT, [server.export(T - 60 * SECOND_NS)]))
    server.record(items_ok, 0.02, 50)
    server.record(items_ok, 0.3, 10)
    server.record(items_err, 0.6, 5)
    client = CumulativeHistogram("http.client.request.duration", start_ns=START)
    client.record(http_server_attributes(CHECKOUT, "GET", "/upstream", 404), 0.05, 4)
    client.record(http_server_attributes(CHECKOUT, "GET", "/upstream", 200), 0.05, 6)
    processor.consume_metrics(metrics_request(CHECKOUT, [server.export(T), client.export(T)]))
    cart = CumulativeHistogram("http.server.duration", start_ns=START)
    cart.record(http_server_attributes(CART, "POST", "/cart", 200, old_names=True), 0.004, 10)
    processor.consume_metrics(metrics_request(CART, [cart.export(T)]))


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    with data_path(tmp_path_factory.mktemp("query")) as parts:
        _http(parts)
        _grpc_and_sql(parts)
        _traces(parts)
        parts[0].flush()
        yield parts[0]


def red(storage: Storage, kind: str, **params: Any) -> dict[str, Any]:
    return run_query(storage.reader(), kind, {"since": "10m", "until": UNTIL, **params})


def test_http_rows_and_percentiles(storage: Storage) -> None:
    result = red(storage, "http")
    rows = {(r["service"], r["method"], r["route"]): r for r in result["rows"]}
    assert set(rows) == {("checkout", "GET", "/items"), ("cart", "POST", "/cart")}
    items = rows[("checkout", "GET", "/items")]
    assert items["requests"] == 105 and items["errors"] == 5
    assert items["error_rate"] == pytest.approx(5 / 105, abs=1e-6)
    assert items["p50_ms"] == pytest.approx(18.75)  # 0.01 + 0.015 * 52.5/90
    assert items["p95_ms"] == pytest.approx(493.75)  # 0.25 + 0.25 * 9.75/10
    assert items["p99_ms"] == pytest.approx(697.5)  # 0.5 + 0.25 * 3.95/5
    assert items["rate_per_s"] == pytest.approx(105 / 120, rel=1e-3)
    assert items["side"] == "server"
    cart = rows[("cart", "POST", "/cart")]
    assert (cart["requests"], cart["errors"], cart["p50_ms"]) == (10, 0, pytest.approx(2.5))
    overall = result["overall"]
    assert (overall["requests"], overall["errors"]) == (115, 5)
    # merged: 10 in (0,0.005], 90 in (0.01,0.025], 10 in (0.25,0.5], 5 in (0.5,0.75]; rank 57.5
    assert overall["p50_ms"] == pytest.approx((0.01 + 0.015 * 47.5 / 90) * 1000)


def test_http_client_side_counts_4xx_as_errors(storage: Storage) -> None:
    (row,) = red(storage, "http", side="client")["rows"]
    assert (row["route"], row["requests"], row["errors"], row["side"]) == ("/upstream", 10, 4, "client")


def test_filters(storage: Storage) -> None:
    assert [r["route"] for r in red(storage, "http", service="check*")["rows"]] == ["/items"]
    assert [r["service"] for r in red(storage, "http", route="/ca*")["rows"]] == ["cart"]
    assert red(storage, "http", method="DELETE")["rows"] == []
    assert len(red(storage, "http", side="all")["rows"]) == 3


def test_window_excludes_older_intervals(storage: Storage) -> None:
    # Only the export at T falls inside the last 20 s: the 40 requests exported at T-60s are out.
    rows = {r["route"]: r for r in red(storage, "http", since="20s")["rows"]}
    assert rows["/items"]["requests"] == 65


def test_empty_result_lists_the_services_there_are(storage: Storage) -> None:
    result = red(storage, "http", service="nope")
    assert result["rows"] == [] and result["overall"]["requests"] == 0
    assert result["overall"]["p50_ms"] is None
    assert {s["service"] for s in result["services_available"]} == {"checkout", "cart"}


def _grpc_and_sql(storage_processor: Any) -> None:
    _, processor = storage_processor
    new = CumulativeHistogram("rpc.server.call.duration", start_ns=START)
    new.record(grpc_server_attributes(CART, "/shop.Cart/Add", "OK"), 0.002, 8)  # type: ignore[arg-type]
    new.record(grpc_server_attributes(CART, "/shop.Cart/Add", "UNAVAILABLE"), 0.08, 2)  # type: ignore[arg-type]
    old = CumulativeHistogram("rpc.server.duration", start_ns=START)
    old.record(grpc_server_attributes(CART, "/shop.Cart/Get", 0, old_names=True), 0.002, 5)
    old.record(grpc_server_attributes(CART, "/shop.Cart/Get", 5, old_names=True), 0.002, 1)
    sql = CumulativeHistogram("db.client.operation.duration", start_ns=START)
    sql.record(sql_client_attributes(CHECKOUT, "SELECT", "items"), 0.001, 20)
    sql.record(sql_client_attributes(CHECKOUT, "SELECT", "items", error="40001"), 0.001, 2)
    legacy = CumulativeHistogram("sql.client.duration", start_ns=START)
    legacy.record(sql_client_attributes(CHECKOUT, "INSERT", "orders", old_names=True), 0.012, 3)
    processor.consume_metrics(metrics_request(CART, [new.export(T), old.export(T)]))
    processor.consume_metrics(metrics_request(CHECKOUT, [sql.export(T), legacy.export(T)]))


def test_grpc_errors_are_non_ok_statuses(storage: Storage) -> None:
    rows = {r["method"]: r for r in red(storage, "grpc")["rows"]}
    assert (rows["/shop.Cart/Add"]["requests"], rows["/shop.Cart/Add"]["errors"]) == (10, 2)
    assert (rows["/shop.Cart/Get"]["requests"], rows["/shop.Cart/Get"]["errors"]) == (6, 1)
    assert rows["/shop.Cart/Add"]["p50_ms"] == pytest.approx(5 * 5 / 8)  # 8 of 10 in (0, 5ms]: 5ms * 5/8


def test_sql_errors_are_error_type(storage: Storage) -> None:
    rows = {(r["operation"], r["table"]): r for r in red(storage, "sql")["rows"]}
    assert (rows[("SELECT", "items")]["requests"], rows[("SELECT", "items")]["errors"]) == (22, 2)
    assert rows[("INSERT", "orders")]["requests"] == 3
    assert rows[("INSERT", "orders")]["db_system"] == "postgresql"
    assert rows[("INSERT", "orders")]["p50_ms"] == pytest.approx(10 + 15 * 1.5 / 3)


SLOW, FAILED, ORPHAN = os.urandom(16), os.urandom(16), os.urandom(16)


def _traces(storage_processor: Any) -> None:
    _, processor = storage_processor
    slow_root = os.urandom(8)
    spans = [
        http_server_span(SLOW, slow_root, start_ns=T - 5 * SECOND_NS, duration_ns=600_000_000, route="/slow"),
        sql_client_span(SLOW, os.urandom(8), slow_root, start_ns=T - 5 * SECOND_NS + 1000, duration_ns=100_000_000),
        http_server_span(FAILED, os.urandom(8), start_ns=T - 4 * SECOND_NS, duration_ns=50_000_000, status=500),
        http_server_span(
            ORPHAN,
            os.urandom(8),
            start_ns=T - 3 * SECOND_NS,
            duration_ns=5_000_000,
            parent_span_id=os.urandom(8),
            route="/child",
        ),
    ]
    processor.consume_traces(trace_request(CHECKOUT, spans[:3]))
    processor.consume_traces(trace_request(CART, spans[3:]))


def traces(storage: Storage, **params: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = run_query(storage.reader(), "traces", {"since": "10m", "until": UNTIL, **params})[
        "traces"
    ]
    return result


def test_trace_summaries_newest_first(storage: Storage) -> None:
    found = traces(storage)
    assert [t["trace_id"] for t in found] == [ORPHAN.hex(), FAILED.hex(), SLOW.hex()]
    slow = found[2]
    assert (slow["span_count"], slow["status"], slow["root_service"], slow["root_operation"]) == (
        2,
        "OK",
        "checkout",
        "GET /slow",
    )
    assert slow["duration_ms"] == pytest.approx(600.0)
    assert found[1]["status"] == "ERROR"
    assert found[0]["root_operation"] == "GET /child", "without its parent, the earliest span is the root"


def test_trace_filters(storage: Storage) -> None:
    assert [t["trace_id"] for t in traces(storage, min_duration="500ms")] == [SLOW.hex()]
    assert [t["trace_id"] for t in traces(storage, service="cart")] == [ORPHAN.hex()]
    assert [t["trace_id"] for t in traces(storage, service="ca*")] == [ORPHAN.hex()]
    assert [t["trace_id"] for t in traces(storage, limit=1)] == [ORPHAN.hex()]
    assert [t["trace_id"] for t in traces(storage, trace_id=SLOW.hex()[:10])] == [SLOW.hex()]
    assert [t["trace_id"] for t in traces(storage, trace_id=SLOW.hex().upper())] == [SLOW.hex()]
    assert traces(storage, since="1s") == []


def test_trace_with_spans(storage: Storage) -> None:
    (trace,) = traces(storage, trace_id=SLOW.hex(), with_spans=True)
    spans = trace["spans"]
    assert [s["kind"] for s in spans] == ["SERVER", "CLIENT"]
    assert spans[1]["parent_span_id"] == spans[0]["span_id"]
    assert spans[0]["http_status_code"] == 200 and spans[0]["process_pid"] == 10


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("http", {"since": "soon"}, "since"),
        ("http", {"sinse": "5m"}, "unknown query parameter"),
        ("http", {"side": "left"}, "side"),
        ("sql", {"route": "/x"}, "does not apply"),
        ("traces", {"trace_id": "xyz"}, "trace id"),
        ("traces", {"limit": 0}, "limit"),
        ("logs", {}, "unknown query kind"),
    ],
)
def test_bad_parameters_are_named(storage: Storage, kind: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        run_query(storage.reader(), kind, params)


def test_rates_share_the_covered_window(tmp_path: Any) -> None:
    """Every row divides by the seconds the protocol's data covers, not by its own first interval."""
    steady, late = beyla_resource("steady", pid=41), beyla_resource("late", pid=42)
    with data_path(tmp_path) as (store, processor):
        early = CumulativeHistogram("http.server.request.duration", start_ns=T - 100 * SECOND_NS)
        early.record(http_server_attributes(steady, "GET", "/a", 200), 0.01, 400)
        recent = CumulativeHistogram("http.server.request.duration", start_ns=T - 10 * SECOND_NS)
        recent.record(http_server_attributes(late, "GET", "/b", 200), 0.01, 400)
        processor.consume_metrics(metrics_request(steady, [early.export(T)]))
        processor.consume_metrics(metrics_request(late, [recent.export(T)]))
        store.flush()
        result = red(store, "http")
        filtered = red(store, "http", service="late")
        timeline = red(store, "http", since="200s", by="100s")
    rates = {r["service"]: r["rate_per_s"] for r in result["rows"]}
    # The data covers the last 100 s of the window: 400 requests each are 4/s, whenever they came.
    assert rates == {"steady": pytest.approx(4.0), "late": pytest.approx(4.0)}
    assert result["overall"]["rate_per_s"] == pytest.approx(8.0)
    assert result["window"]["covered_seconds"] == pytest.approx(100.0)
    # A filter does not change a row's rate.
    assert [r["rate_per_s"] for r in filtered["rows"]] == [pytest.approx(4.0)]
    # The timeline's second bucket is the one covered: 800 requests over its 100 s.
    assert [b["rate_per_s"] for b in timeline["buckets"]] == [0.0, pytest.approx(8.0)]
    assert {s["service"]: s["buckets"][1]["rate_per_s"] for s in timeline["series"]} == {
        "steady": pytest.approx(4.0),
        "late": pytest.approx(4.0),
    }
