"""RED from stored spans when a protocol's metrics never arrive (Beyla v3.31.0 sends SQL only as spans).

The data is what the real Beyla sent in the issue-13 run: plain-text SQL calls as spans of kind
SERVER with `server.address` set to the client's process name, nested under HTTP server spans, no
`process.pid` in the resource, no `db.client.*` metrics. Stored through the real receiver path into
a real DuckDB file, then queried.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from coral_ebpf.cli.query_output import print_red
from coral_ebpf.query.dispatch import run_query
from coral_ebpf.storage.writer import Storage
from coral_ebpf.transform.processor import TransformProcessor
from tests.helpers.beyla_otlp import (
    SECOND_NS,
    CumulativeHistogram,
    http_server_span,
    key_values,
    metrics_request,
    sql_client_attributes,
    trace_request,
    window_end,
)
from tests.helpers.datapath import data_path

T = time.time_ns() - 10 * SECOND_NS
UNTIL = window_end(T)
MS = 1_000_000
APP = Resource(
    attributes=key_values({"service.name": "shop", "service.instance.id": "guest:5150", "telemetry.sdk.name": "beyla"})
)
# (operation, table, error.type, how many, duration of the i-th call in ms)
CALLS = [("SELECT", "items", None, 30, 1), ("INSERT", "items", None, 10, 2), ("SELECT", "no_such_table", "42P01", 8, 3)]


def beyla_sql_span(
    trace_id: bytes, parent: bytes, call: tuple[str, str, str | None], *, start: int, duration: int
) -> Span:
    operation, table, error = call
    attributes: dict[str, Any] = {
        "db.system.name": "postgresql",
        "db.operation.name": operation,
        "db.collection.name": table,
        "db.query.text": f"{operation} ... {table}",
        "server.address": "python3.11",
    }
    if error:
        attributes["error.type"] = error
    span = Span(
        trace_id=trace_id,
        span_id=os.urandom(8),
        parent_span_id=parent,
        name=f"{operation} {table}",
        kind=Span.SPAN_KIND_SERVER,  # as Beyla v3.31.0 sends it
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration,
        attributes=key_values(attributes),
    )
    if error:
        span.status.code = span.status.STATUS_CODE_ERROR
    return span


def store_spans(processor: TransformProcessor) -> None:
    spans: list[Span] = []
    start = T - 60 * SECOND_NS
    for operation, table, error, count, unit_ms in CALLS:
        for i in range(1, count + 1):
            trace_id, root = os.urandom(16), os.urandom(8)
            status = 500 if error else 200
            spans.append(
                http_server_span(trace_id, root, start_ns=start, duration_ns=50 * MS, status=status, route="/items")
            )
            spans.append(
                beyla_sql_span(trace_id, root, (operation, table, error), start=start + MS, duration=i * unit_ms * MS)
            )
            start += 100 * MS
    processor.consume_traces(trace_request(APP, spans))


@pytest.fixture
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Storage, TransformProcessor]]:
    with data_path(tmp_path_factory.mktemp("spans")) as parts:
        store_spans(parts[1])
        parts[0].flush()
        yield parts


def red(storage: Storage, kind: str, **params: Any) -> dict[str, Any]:
    storage.flush()
    return run_query(storage.reader(), kind, {"since": "10m", "until": UNTIL, **params})


def test_sql_red_from_spans_per_operation_and_table(pipeline: tuple[Storage, TransformProcessor]) -> None:
    result = red(pipeline[0], "sql")
    assert result["source"] == "spans"
    rows = {(r["operation"], r["table"]): r for r in result["rows"]}
    assert set(rows) == {("SELECT", "items"), ("INSERT", "items"), ("SELECT", "no_such_table")}
    select, insert, failing = rows[("SELECT", "items")], rows[("INSERT", "items")], rows[("SELECT", "no_such_table")]
    assert (select["requests"], select["errors"]) == (30, 0)
    assert (insert["requests"], insert["errors"]) == (10, 0)
    assert (failing["requests"], failing["errors"], failing["error_rate"]) == (8, 8, 1.0)
    assert all(
        r["service"] == "shop" and r["side"] == "client" and r["db_system"] == "postgresql" for r in rows.values()
    )
    # Exact percentiles of the span durations: SELECT items took 1..30 ms.
    assert select["p50_ms"] == pytest.approx(15.5)
    assert select["p95_ms"] == pytest.approx(1 + 0.95 * 29)
    assert insert["p50_ms"] == pytest.approx(11.0)  # 2, 4, ... 20 ms
    assert (result["overall"]["requests"], result["overall"]["errors"]) == (48, 8)
    assert {r["source"] for r in result["rows"]} == {"spans"}  # what `query sql --json` shows per row


def test_filters_apply_to_spans(pipeline: tuple[Storage, TransformProcessor]) -> None:
    result = red(pipeline[0], "sql", table="no_such_table")
    assert [(r["operation"], r["requests"]) for r in result["rows"]] == [("SELECT", 8)]
    assert red(pipeline[0], "sql", service="nobody")["rows"] == []


def test_http_from_spans_too(pipeline: tuple[Storage, TransformProcessor]) -> None:
    result = red(pipeline[0], "http")
    assert result["source"] == "spans"
    [row] = result["rows"]
    assert (row["service"], row["side"], row["method"], row["route"]) == ("shop", "server", "GET", "/items")
    assert (row["requests"], row["errors"]) == (48, 8)
    assert row["p50_ms"] == pytest.approx(50.0)
    assert red(pipeline[0], "grpc")["rows"] == []  # no gRPC spans: nothing, and the metrics' hint


def test_metrics_win_when_they_arrive(pipeline: tuple[Storage, TransformProcessor]) -> None:
    storage, processor = pipeline
    client = CumulativeHistogram("db.client.operation.duration", start_ns=T - 120 * SECOND_NS)
    client.record(sql_client_attributes(APP, "SELECT", "items"), 0.004, 7)
    processor.consume_metrics(metrics_request(APP, [client.export(T)]))
    result = red(storage, "sql")
    assert result["source"] == "metrics"
    assert [(r["operation"], r["table"], r["requests"]) for r in result["rows"]] == [("SELECT", "items", 7)]


def test_the_table_view_says_the_source(
    pipeline: tuple[Storage, TransformProcessor], capsys: pytest.CaptureFixture[str]
) -> None:
    params = {"since": "10m", "until": UNTIL}
    print_red(red(pipeline[0], "sql"), {"kind": "sql", **params})
    output = capsys.readouterr().out
    assert "Source: stored spans (no SQL metrics in this window" in " ".join(output.split())
