"""The trace waterfall and RED over time, from a real DuckDB file, through the query layer and the CLI."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coral_ebpf.cli import main
from coral_ebpf.cli.query_views import sparkline, time_bar
from coral_ebpf.query.dispatch import run_query
from coral_ebpf.query.params import QueryError
from tests.helpers.beyla_otlp import (
    SECOND_NS,
    CumulativeHistogram,
    beyla_resource,
    http_server_attributes,
    http_server_span,
    metrics_request,
    sql_client_span,
    trace_request,
)
from tests.helpers.datapath import data_path

# Set when the data is written (not at import: the CLI's windows end at the real now).
NOW = time.time_ns()
UNTIL = NOW / 1e9
MS = 1_000_000
TRACE, OK_TRACE = os.urandom(16), os.urandom(16)
ROOT, AUTH, QUERY, RENDER = (os.urandom(8) for _ in range(4))
STATEMENT = "SELECT id, name,\n  email FROM users WHERE id = $1 AND deleted_at IS NULL ORDER BY created_at DESC"


def _feed(processor: Any) -> None:
    shop = beyla_resource("shop", pid=31)
    # Exports land in the middle of 1-minute buckets of the 4 minutes ending at NOW:
    # bucket 0 gets 30 (2 errors), bucket 1 gets 60 (of which 10 slow), bucket 2 nothing, bucket 3 gets 12.
    histogram = CumulativeHistogram("http.server.request.duration", start_ns=NOW - 230 * SECOND_NS)
    ok = http_server_attributes(shop, "GET", "/items", 200)
    failed = http_server_attributes(shop, "GET", "/items", 500)
    other = http_server_attributes(shop, "POST", "/cart", 200)
    histogram.record(ok, 0.02, 28)
    histogram.record(failed, 0.02, 2)
    processor.consume_metrics(metrics_request(shop, [histogram.export(NOW - 200 * SECOND_NS)]))
    histogram.record(ok, 0.02, 50)
    histogram.record(ok, 0.8, 10)
    processor.consume_metrics(metrics_request(shop, [histogram.export(NOW - 130 * SECOND_NS)]))
    histogram.record(other, 0.004, 12)
    processor.consume_metrics(metrics_request(shop, [histogram.export(NOW - 10 * SECOND_NS)]))
    begin = NOW - 5 * SECOND_NS
    spans = [
        http_server_span(TRACE, ROOT, start_ns=begin, duration_ns=400 * MS, route="/items", status=500),
        sql_client_span(TRACE, AUTH, ROOT, start_ns=begin + 10 * MS, duration_ns=100 * MS),
        sql_client_span(
            TRACE, QUERY, ROOT, start_ns=begin + 120 * MS, duration_ns=200 * MS, extra={"db.query.text": STATEMENT}
        ),
        http_server_span(
            TRACE, RENDER, start_ns=begin + 330 * MS, duration_ns=50 * MS, route="/render", parent_span_id=QUERY
        ),
    ]
    spans.append(http_server_span(OK_TRACE, os.urandom(8), start_ns=begin + SECOND_NS, duration_ns=3 * MS))
    processor.consume_traces(trace_request(shop, spans))


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    global NOW, UNTIL  # noqa: PLW0603 - the tests' "now" is when the fixture writes the data
    NOW = time.time_ns()
    UNTIL = NOW / 1e9
    root = tmp_path_factory.mktemp("views")
    with data_path(root / "state") as (storage, processor):
        _feed(processor)
        storage.flush()
    config = root / "config.yaml"
    config.write_text(f"state_dir: {root / 'state'}\n")
    yield config


def query(config: Path, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    from coral_ebpf.storage.database import open_read_only

    connection = open_read_only(config.parent / "state" / "coral-ebpf.duckdb")
    try:
        return run_query(connection, kind, params)
    finally:
        connection.close()


def test_waterfall_orders_spans_depth_first_with_offsets(state: Path) -> None:
    trace = query(state, "waterfall", {"trace_id": TRACE.hex()[:10]})["trace"]
    assert trace["trace_id"] == TRACE.hex() and trace["duration_ms"] == pytest.approx(400.0)
    rows = [(s["span_id"], s["depth"], s["offset_ms"], s["duration_ms"]) for s in trace["spans"]]
    assert rows == [
        (ROOT.hex(), 0, 0.0, 400.0),
        (AUTH.hex(), 1, 10.0, 100.0),
        (QUERY.hex(), 1, 120.0, 200.0),
        (RENDER.hex(), 2, 330.0, 50.0),
    ]
    root, _, sql, _ = trace["spans"]
    assert root["error"] and root["status"] == "ERROR" and trace["status"] == "ERROR"
    assert root["attributes"]["http.route"] == "/items" and root["attributes"]["http.status_code"] == 500
    statement = sql["attributes"]["db.statement"]
    assert statement.startswith("SELECT id, name, email FROM users") and statement.endswith("…")
    assert len(statement) == 60 and sql["attributes"]["db.operation"] == "SELECT"


def test_waterfall_needs_an_existing_trace(state: Path) -> None:
    with pytest.raises(QueryError, match="needs a trace id"):
        query(state, "waterfall", {})
    with pytest.raises(QueryError, match="no stored trace"):
        query(state, "waterfall", {"trace_id": "00000000"})


def test_timeline_buckets_follow_the_export_times(state: Path) -> None:
    result = query(state, "http", {"since": "4m", "until": UNTIL, "by": "1m"})
    buckets = result["buckets"]
    assert [b["requests"] for b in buckets] == [30, 60, 0, 12]
    assert [b["errors"] for b in buckets] == [2, 0, 0, 0]
    assert buckets[0]["rate_per_s"] == pytest.approx(30 / 50)  # the data starts 10 s into the bucket
    assert buckets[1]["p99_ms"] == pytest.approx(750 + 250 * (59.4 - 50) / 10)  # 10 of 60 in (0.75, 1.0]
    assert buckets[2]["p99_ms"] is None and buckets[3]["p50_ms"] == pytest.approx(2.5)
    assert buckets[3]["end"] == pytest.approx(UNTIL) and buckets[0]["start"] == pytest.approx(UNTIL - 240)
    series = {(s["method"], s["route"]): s for s in result["series"]}
    assert [b["requests"] for b in series[("GET", "/items")]["buckets"]] == [30, 60, 0, 0]
    assert series[("POST", "/cart")]["requests"] == 12
    summary = query(state, "http", {"since": "4m", "until": UNTIL})["overall"]
    assert summary["requests"] == sum(b["requests"] for b in buckets)


def test_timeline_rejects_too_many_buckets(state: Path) -> None:
    with pytest.raises(QueryError, match="by:"):
        query(state, "http", {"since": "2d", "by": "1m"})
    with pytest.raises(QueryError, match="by:"):
        query(state, "http", {"by": "0s"})


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_waterfall_fits_80_columns(
    state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    argv = ("query", "traces", "--trace-id", TRACE.hex(), "--format", "waterfall", "--config", str(state))
    code, out, _ = run(capsys, *argv)
    assert code == 0
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].startswith(f"Trace {TRACE.hex()}") and "4 spans" in lines[0] and "ERROR" in lines[0]
    root, auth, sql, render = lines[2:]
    assert root.startswith("█" * 20) and " ERR GET /items · shop /items [500]" in root
    assert auth.startswith("█████ ") and "+10.0ms" in auth and "   SELECT users · shop" in auth
    assert sql.startswith(" " * 6 + "██████████ ") and '"SELECT id,' in sql
    assert render.startswith(" " * 16 + "██▌ ") and "     GET /render" in render
    code, out, _ = run(capsys, *argv, "--json")
    document = json.loads(out)
    assert [s["offset_ms"] for s in document["spans"]] == [0.0, 10.0, 120.0, 330.0]


def test_cli_waterfall_needs_a_trace_id(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "query", "traces", "--format", "waterfall", "--config", str(state))
    assert code == 2 and "--trace-id" in err
    code, _, err = run(
        capsys, "query", "traces", "--format", "waterfall", "--trace-id", "0" * 32, "--config", str(state)
    )
    assert code == 1 and "no stored trace" in err


def test_cli_red_by_minute(state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run(capsys, "query", "http", "--since", "4m", "--by", "1m", "--json", "--config", str(state))
    assert code == 0
    document = json.loads(out)
    assert [b["requests"] for b in document["buckets"]] == [30, 60, 0, 12] and document["by"] == 60
    code, out, _ = run(capsys, "query", "http", "--since", "4m", "--by", "1m", "--config", str(state))
    assert code == 0
    assert "4 buckets of 60.00s" in out
    all_row = next(line for line in out.splitlines() if "All" in line)
    assert "102" in all_row and "▅█ ▂ 1.00" in all_row and "█▁ ▁ 2" in all_row
    code, _, err = run(capsys, "query", "http", "--by", "soon", "--config", str(state))
    assert code == 2 and "--by" in err


def test_time_bar_and_sparkline() -> None:
    assert time_bar(0.0, 1.0, 10) == "█" * 10
    assert time_bar(0.5, 0.5, 10) == "     ▏    "
    assert time_bar(0.0, 0.25, 10) == "██▌       "
    assert sparkline([0.0, 1.0, None, 2.0]) == "▁▅ █"
    assert len(sparkline([float(v) for v in range(60)], width=20)) == 20


def test_services_lists_red_engine_and_instances(state: Path) -> None:
    (shop,) = query(state, "services", {"since": "4m", "until": UNTIL})["services"]
    assert shop == query(state, "services", {"since": "4m", "until": UNTIL, "service": "shop"})["services"][0]
    assert (shop["service"], shop["protocol"], shop["requests"], shop["errors"]) == ("shop", "http", 102, 2)
    assert shop["engine"] == "beyla" and shop["instances"] == 1
    assert shop["p99_ms"] == query(state, "http", {"since": "4m", "until": UNTIL})["overall"]["p99_ms"]
    assert query(state, "services", {"since": "4m", "until": UNTIL, "service": "nope"})["services"] == []


def test_red_regrouped_by_status_and_method(state: Path) -> None:
    by_status = query(state, "http", {"since": "4m", "until": UNTIL, "group": "status"})["rows"]
    assert {r["status_code"]: r["requests"] for r in by_status} == {200: 100, 500: 2}
    by_method = query(state, "http", {"since": "4m", "until": UNTIL, "group": "method", "by": "2m"})["series"]
    assert {s["method"]: s["requests"] for s in by_method} == {"GET": 90, "POST": 12}
    with pytest.raises(QueryError, match="group"):
        query(state, "sql", {"group": "status"})


def test_failed_traces_only(state: Path) -> None:
    every = query(state, "traces", {"since": "4m", "until": UNTIL})["traces"]
    assert [t["trace_id"] for t in every] == [OK_TRACE.hex(), TRACE.hex()]
    found = query(state, "traces", {"since": "4m", "until": UNTIL, "errors_only": True})["traces"]
    assert [t["trace_id"] for t in found] == [TRACE.hex()]
