"""`coral-ebpf query ...` end to end on a real database file (the agent is not running)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coral_ebpf.cli import main
from coral_ebpf.state import PartState
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

TRACE = os.urandom(16)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("cli")
    now = time.time_ns()
    resource = beyla_resource("frontend")
    with data_path(root / "state") as (_, processor):
        histogram = CumulativeHistogram("http.server.request.duration", start_ns=now - 100 * SECOND_NS)
        histogram.record(http_server_attributes(resource, "GET", "/users/{id}", 200), 0.02, 19)
        histogram.record(http_server_attributes(resource, "GET", "/users/{id}", 500), 2.0, 1)
        processor.consume_metrics(metrics_request(resource, [histogram.export(now - 5 * SECOND_NS)]))
        root_span = os.urandom(8)
        processor.consume_traces(
            trace_request(
                resource,
                [
                    http_server_span(TRACE, root_span, start_ns=now - 4 * SECOND_NS, duration_ns=700_000_000),
                    sql_client_span(
                        TRACE, os.urandom(8), root_span, start_ns=now - 4 * SECOND_NS + 10, duration_ns=300_000_000
                    ),
                ],
            )
        )
    config = root / "config.yaml"
    config.write_text(f"state_dir: {root / 'state'}\n")
    yield config


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # rich sizes tables to the terminal; captured output has none, so say how wide it is.
    monkeypatch.setenv("COLUMNS", "200")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_http_json(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "query", "http", "--json", "--config", str(config_file))
    assert code == 0
    (row,) = json.loads(out)
    assert {k: row[k] for k in ("service", "method", "route", "requests", "errors")} == {
        "service": "frontend",
        "method": "GET",
        "route": "/users/{id}",
        "requests": 20,
        "errors": 1,
    }
    assert row["error_rate"] == pytest.approx(0.05)
    assert row["p50_ms"] == pytest.approx(10 + 15 * 10 / 19)
    assert row["p99_ms"] == pytest.approx(1000 + 1500 * (19.8 - 19))
    assert row["p95_ms"] == pytest.approx(25.0)


def test_json_flag_also_accepted_before_the_kind(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "query", "--json", "--config", str(config_file), "http")
    assert code == 0 and json.loads(out)[0]["requests"] == 20


def test_http_table_with_overall_line(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "query", "http", "--config", str(config_file))
    assert code == 0
    assert "frontend" in out and "/users/{id}" in out
    assert "Overall: 20 requests" in out and "1 error (5.00%)" in out


def test_empty_results_say_why(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "query", "grpc", "--config", str(config_file))
    assert code == 0
    assert "No gRPC server-side requests in the last 15m" in out
    assert "no gRPC metrics at all" in out and "coral-ebpf status" in out
    code, out, _ = run(capsys, "query", "http", "--service", "backend", "--config", str(config_file))
    assert "matching service 'backend'" in out and "frontend (server side" in out
    code, out, _ = run(capsys, "query", "grpc", "--json", "--config", str(config_file))
    assert json.loads(out) == []


def test_traces_table_tree_and_json(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "query", "traces", "--config", str(config_file), "--min-duration", "500ms")
    assert code == 0 and "Root Operation" in out and "GET /api/users/{id}" in out
    code, out, _ = run(
        capsys, "query", "traces", "--config", str(config_file), "--trace-id", TRACE.hex()[:12], "--format", "tree"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"Trace {TRACE.hex()}") and "2 spans" in lines[0]
    assert lines[1].startswith("└─ frontend (700ms, GET /api/users/{id}) [200]")
    assert lines[2].startswith("   └─ frontend (300ms, SELECT users)")
    code, out, _ = run(capsys, "query", "traces", "--json", "--config", str(config_file))
    (trace,) = json.loads(out)
    assert trace["trace_id"] == TRACE.hex() and len(trace["spans"]) == 2
    code, out, _ = run(capsys, "query", "traces", "--min-duration", "1s", "--config", str(config_file))
    assert "No traces in the last 15m" in out


@pytest.mark.parametrize(
    "argv",
    [
        ("query", "http", "--since", "5x"),
        ("query", "traces", "--limit", "0"),
        ("query", "traces", "--trace-id", "nothex"),
        ("query", "traces", "--min-duration", "slow"),
        ("query", "http", "--side", "left"),
        ("query",),
    ],
)
def test_usage_errors_exit_2(config_file: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    try:
        code = main([*argv, "--config", str(config_file)])
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    assert code == 2
    assert "error" in capsys.readouterr().err


def test_no_database_is_a_failure_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'empty'}\n")
    code, _, err = run(capsys, "query", "http", "--config", str(config))
    assert code == 1
    assert "no database at" in err and "start the agent" in err


def test_help_for_every_kind(capsys: pytest.CaptureFixture[str]) -> None:
    for kind in ("http", "grpc", "sql", "messaging", "traces"):
        with pytest.raises(SystemExit) as exited:
            main(["query", kind, "--help"])
        assert exited.value.code == 0
        assert "--since" in capsys.readouterr().out


def test_queries_go_through_a_running_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coral_ebpf.agent.control import ControlServer
    from coral_ebpf.agent.status import AgentInfo, StatusDocument
    from coral_ebpf.query.dispatch import query_executor

    socket_path = tmp_path / "run" / "control.sock"
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\ncontrol:\n  socket: {socket_path}\n")
    now = time.time_ns()
    resource = beyla_resource("live")
    with data_path(tmp_path / "state") as (storage, processor):
        histogram = CumulativeHistogram("http.server.request.duration", start_ns=now - 10 * SECOND_NS)
        histogram.record(http_server_attributes(resource, "GET", "/live", 200), 0.02, 3)
        processor.consume_metrics(metrics_request(resource, [histogram.export(now)]))
        storage.flush()
        status = StatusDocument(AgentInfo("0", 1, PartState.RUNNING, "h", 0.0, "c", "s", "", ""), {})
        server = ControlServer(socket_path, status=lambda: status, query=query_executor(storage.reader))
        server.start()
        try:
            # The agent holds the database file: only the control socket can answer.
            code, out, _ = run(capsys, "query", "http", "--json", "--config", str(config))
            assert code == 0
            (row,) = json.loads(out)
            assert (row["service"], row["route"], row["requests"]) == ("live", "/live", 3)
            code, _, err = run(capsys, "query", "traces", "--trace-id", "zz", "--config", str(config))
            assert code == 2 and "trace id" in err
            assert server.status()["requests"] == 1
        finally:
            server.stop(5)


def test_percentiles_outside_the_finite_buckets_show_as_bounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time_ns()
    resource = beyla_resource("edges")
    with data_path(tmp_path / "state") as (_, processor):
        histogram = CumulativeHistogram("http.server.request.duration", start_ns=now - 100 * SECOND_NS)
        histogram.record(http_server_attributes(resource, "GET", "/fast", 200), 0.0002, 10)  # in (0, 5 ms]
        histogram.record(http_server_attributes(resource, "GET", "/stuck", 200), 12.0, 10)  # in (10 s, +Inf)
        processor.consume_metrics(metrics_request(resource, [histogram.export(now - 5 * SECOND_NS)]))
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")

    code, out, _ = run(capsys, "query", "http", "--json", "--config", str(config))
    assert code == 0
    rows = {row["route"]: row for row in json.loads(out)}
    fast, stuck = rows["/fast"], rows["/stuck"]
    # JSON keeps PromQL's number and says what it is worth.
    assert fast["p50_ms"] == pytest.approx(2.5) and fast["p50_bound"] == "upper" and fast["p50_bound_ms"] == 5.0
    assert stuck["p99_ms"] == 10_000.0 and stuck["p99_bound"] == "lower" and stuck["p99_bound_ms"] == 10_000.0

    code, out, _ = run(capsys, "query", "http", "--config", str(config))
    assert code == 0
    assert "≤5.0ms" in out and ">10.00s" in out
    assert "2.50ms" not in out and "10000" not in out
