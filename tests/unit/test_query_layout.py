"""`coral-ebpf query` as a real subprocess: 80 columns, piped, --wide, tsv, 4xx and the traces table."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.agent_process import CLI, REPO
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

LONG_ROUTE = "/api/v1/organisations/{org_id}/projects/{project_id}/items/{item_id}"
SERVICE = "checkout-service-production"
SLOW_TRACE, FAST_TRACE, LONE_TRACE = os.urandom(16), os.urandom(16), os.urandom(16)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("layout")
    now = time.time_ns()
    resource = beyla_resource(SERVICE)
    with data_path(root / "state") as (_, processor):
        histogram = CumulativeHistogram("http.server.request.duration", start_ns=now - 100 * SECOND_NS)
        histogram.record(http_server_attributes(resource, "GET", LONG_ROUTE, 200), 0.0004, 1_234_000)
        histogram.record(http_server_attributes(resource, "GET", LONG_ROUTE, 404), 0.0004, 567)
        histogram.record(http_server_attributes(resource, "POST", "/cart", 503), 12.0, 3)
        processor.consume_metrics(metrics_request(resource, [histogram.export(now - 5 * SECOND_NS)]))
        root_span = os.urandom(8)
        spans = [
            http_server_span(SLOW_TRACE, root_span, start_ns=now - 20 * SECOND_NS, duration_ns=900_000_000),
            sql_client_span(SLOW_TRACE, os.urandom(8), root_span, start_ns=now - 20 * SECOND_NS + 10, duration_ns=10),
            http_server_span(FAST_TRACE, os.urandom(8), start_ns=now - 10 * SECOND_NS, duration_ns=1_000_000),
            http_server_span(
                LONE_TRACE, os.urandom(8), start_ns=now - 15 * SECOND_NS, duration_ns=5_000_000, status=404
            ),
        ]
        processor.consume_traces(trace_request(resource, spans))
    path = root / "config.yaml"
    path.write_text(f"state_dir: {root / 'state'}\n")
    yield path


def cli(config: Path, *args: str, columns: int | None) -> subprocess.CompletedProcess[str]:
    """The CLI with its output piped (no TTY), with or without COLUMNS."""
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run(
        [*CLI, "query", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env=env,
    )


def table_lines(output: str) -> list[str]:
    """The header and data rows (between the title and the rule, and the footer)."""
    lines = output.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("─"))
    end = next(i for i in range(rule + 1, len(lines)) if lines[i].startswith(("(", "Overall")))
    return [lines[rule - 1], *lines[rule + 1 : end]]


def test_http_fits_80_columns_with_numbers_whole(config: Path) -> None:
    result = cli(config, "http", columns=80)
    assert result.returncode == 0, result.stderr
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout
    header, *rows = table_lines(result.stdout)
    # One service: named in the title, its column left to the routes.
    assert SERVICE in result.stdout.splitlines()[0]
    assert header.split()[:2] == ["Method", "Route"] and "4xx" in header.split()
    (long_row,) = [row for row in rows if "GET" in row]
    # The route is shortened in the middle by whole path segments; the numbers are whole.
    route = long_row.split()[1]  # shortened in the middle, by whole segments
    assert route.startswith("/api/") and route.endswith("/…/items/{item_id}"), route
    assert long_row.split()[2:5] == ["1234567", long_row.split()[3], "0"] and "567" in long_row.split()
    rate = float(long_row.split()[3])
    assert 1234567 / 130 < rate <= 1234567 / 100  # the data covers 100 s and then some (export to now)
    assert "(P95, Error % hidden at this width; --wide shows every column)" in result.stdout
    assert "Overall: 1234570 requests" in result.stdout and "3 errors" in result.stdout


def test_piped_without_columns_and_wide_show_everything(config: Path) -> None:
    for args, columns in ((("http",), None), (("http", "--wide"), 80)):
        result = cli(config, *args, columns=columns)
        assert result.returncode == 0, result.stderr
        header, *rows = table_lines(result.stdout)
        assert "P95" in header.split() and "Error" in header.split()
        assert any(LONG_ROUTE in row for row in rows), result.stdout
        # A stable layout: every row has a cell under each header, on one line.
        for row in rows:
            assert len(row.split()) == len(header.split()) - 1  # "Error %" is two words


def test_tsv_has_the_json_fields_in_full(config: Path) -> None:
    result = cli(config, "http", "--format", "tsv", columns=40)
    assert result.returncode == 0, result.stderr
    header, *rows = (line.split("\t") for line in result.stdout.splitlines())
    assert header[:4] == ["service", "side", "method", "route"] and "status_4xx" in header
    records = [dict(zip(header, row, strict=True)) for row in rows]
    long = next(r for r in records if r["route"] == LONG_ROUTE)
    assert (long["requests"], long["status_4xx"], long["errors"]) == ("1234567", "567", "0")


def test_status_filter_and_4xx_counts(config: Path) -> None:
    result = cli(config, "http", "--status", "4xx", "--json", columns=None)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["route"], row["requests"], row["status_4xx"], row["errors"]) == (LONG_ROUTE, 567, 567, 0)
    (failing,) = json.loads(cli(config, "http", "--status", "503", "--json", columns=None).stdout)
    assert (failing["route"], failing["errors"], failing["status_4xx"]) == ("/cart", 3, 0)
    bad = cli(config, "http", "--status", "6xx", columns=None)
    assert bad.returncode == 2 and "status" in bad.stderr and "Traceback" not in bad.stderr


def test_traces_table_start_status_order_and_plurals(config: Path) -> None:
    result = cli(config, "traces", columns=80)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), result.stdout
    assert "newest first, 3 traces" in lines[0]
    header = lines[1].split()
    assert header[:2] == ["Started", "Trace"] and "Status" in header
    rows = [line for line in lines[3:] if line[:2].isdigit()]
    assert [row.split()[-3] for row in rows] == ["200", "404", "200"]  # newest first: fast, lone, slow
    by_duration = cli(config, "traces", "--sort", "duration", "--format", "tsv", columns=None).stdout.splitlines()
    ids = [line.split("\t")[0] for line in by_duration[1:]]
    assert ids == [SLOW_TRACE.hex(), LONE_TRACE.hex(), FAST_TRACE.hex()]
    tree = cli(config, "traces", "--trace-id", FAST_TRACE.hex(), "--format", "tree", columns=None)
    assert "1 span " in tree.stdout and "1 spans" not in tree.stdout


def test_a_trace_id_that_matches_nothing_exits_1(config: Path) -> None:
    result = cli(config, "traces", "--trace-id", "0123456789abcdef", columns=None)
    assert result.returncode == 1
    assert "no stored trace has the id '0123456789abcdef'" in result.stderr and "Traceback" not in result.stderr
