"""End to end through `coral-ebpf start` (issue 2): OTel SDK exporters -> the running agent ->
`coral-ebpf query` and `coral-ebpf status` through the control socket; bad input; the files;
bad configs and a second agent; and the data still there after SIGTERM.

One agent serves the whole module; the tests that stop it come last.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceProto
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from coral_ebpf.query.quantile import histogram_quantile
from tests.helpers import beyla_otlp
from tests.helpers.agent_process import PARTS, AgentProcess, call_failed, run_cli
from tests.helpers.bombs import gzip_bomb
from tests.helpers.raw_grpc import unary_call
from tests.helpers.sdk_meter import beyla_meter_provider
from tests.helpers.timing import eventually

MAX_BODY = 4 * 1024 * 1024
SETTINGS = {
    "otlp": {"max_body_bytes": "4MiB"},
    "storage": {"flush_interval": "200ms"},
    "red": {"export_interval": "1s"},
}
BOUNDS = beyla_otlp.BEYLA_DURATION_BUCKETS
# What each exporter sends, per (method, route, status): (count, seconds each).
HTTP_MIX = {
    ("GET", "/users/{id}", 200): (40, 0.02),
    ("GET", "/users/{id}", 500): (5, 0.3),
    ("POST", "/orders", 201): (10, 0.004),
}
GRPC_MIX = {("/shop.Cart/AddItem", 0): (20, 0.008), ("/shop.Cart/AddItem", 13): (3, 0.06)}
SQL_MIX = {("SELECT", "users", None): (12, 0.002), ("SELECT", "users", "timeout"): (2, 0.03)}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    running = AgentProcess(tmp_path_factory.mktemp("agent-data-path"), SETTINGS)
    try:
        running.start()
        yield running
        if running.exit_code is None:
            running.stop()
    finally:
        running.kill()


@pytest.fixture(autouse=True)
def _agent_log_on_failure(request: pytest.FixtureRequest, agent: AgentProcess) -> Iterator[None]:
    yield
    if call_failed(request.node):
        print(agent.log_tail(150))


# ---------------------------------------------------------------------------- senders


def _sdk_resource(proto: ResourceProto) -> Resource:
    return Resource(
        {kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value") for kv in proto.attributes}
    )


def emit_metrics(exporter: MetricExporter, service: str, pid: int) -> None:
    """Beyla's RED histograms (names, units, buckets, attributes) through the SDK, cumulative."""
    proto = beyla_otlp.beyla_resource(service, pid=pid)
    provider = beyla_meter_provider(exporter, _sdk_resource(proto))
    meter = provider.get_meter("github.com/grafana/beyla/v3")
    http_duration = meter.create_histogram("http.server.request.duration", unit="s")
    rpc_duration = meter.create_histogram("rpc.server.call.duration", unit="s")
    db_duration = meter.create_histogram("db.client.operation.duration", unit="s")
    for (method, route, status), (count, seconds) in HTTP_MIX.items():
        attributes = beyla_otlp.http_server_attributes(proto, method, route, status)
        for _ in range(count):
            http_duration.record(seconds, attributes)
    for (method, code), (count, seconds) in GRPC_MIX.items():
        attributes = beyla_otlp.grpc_server_attributes(proto, method, code)
        for _ in range(count):
            rpc_duration.record(seconds, attributes)
    for (operation, table, error), (count, seconds) in SQL_MIX.items():
        attributes = beyla_otlp.sql_client_attributes(proto, operation, table, error)
        for _ in range(count):
            db_duration.record(seconds, attributes)
    # Both export the same cumulative points: the second one must add nothing.
    assert provider.force_flush(30_000)
    provider.shutdown()


def emit_spans(exporter: SpanExporter, service: str, pid: int) -> None:
    """One trace: a Beyla-like HTTP server span with a SQL client child that failed."""
    provider = TracerProvider(resource=_sdk_resource(beyla_otlp.beyla_resource(service, pid=pid)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("github.com/grafana/beyla/v3")
    with tracer.start_as_current_span("GET /users/{id}", kind=SpanKind.SERVER) as server:
        server.set_attribute("http.request.method", "GET")
        server.set_attribute("http.route", "/users/{id}")
        server.set_attribute("url.path", "/users/42")
        server.set_attribute("http.response.status_code", 500)
        server.set_status(StatusCode.ERROR)
        with tracer.start_as_current_span("SELECT users", kind=SpanKind.CLIENT) as client:
            client.set_attribute("db.system.name", "postgresql")
            client.set_attribute("db.operation.name", "SELECT")
            client.set_status(StatusCode.ERROR, "timeout")
    provider.shutdown()


def send(agent: AgentProcess, transport: str, service: str, pid: int) -> None:
    if transport == "grpc":
        address = agent.grpc_address()
        emit_metrics(GrpcMetricExporter(endpoint=address, insecure=True, timeout=20), service, pid)
        emit_spans(GrpcSpanExporter(endpoint=address, insecure=True, timeout=20), service, pid)
    else:
        base = f"http://{agent.http_address()}"
        emit_metrics(HttpMetricExporter(endpoint=f"{base}/v1/metrics", timeout=20), service, pid)
        emit_spans(HttpSpanExporter(endpoint=f"{base}/v1/traces", timeout=20), service, pid)


def expected_quantiles(mix: dict[Any, tuple[int, float]]) -> dict[str, float]:
    counts = [0] * (len(BOUNDS) + 1)
    for count, seconds in mix.values():
        counts[next((i for i, bound in enumerate(BOUNDS) if seconds <= bound), len(BOUNDS))] += count
    found = {f"p{int(q * 100)}_ms": histogram_quantile(q, BOUNDS, counts) for q in (0.5, 0.95, 0.99)}
    return {key: value * 1000 for key, value in found.items() if value is not None}


def by_key(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(row[key] for key in keys): row for row in rows}


def receiver_totals(status: dict[str, Any], transport: str) -> tuple[int, int]:
    signals = status["receiver"][transport]["signals"]
    return signals["traces"]["items_accepted"], signals["metrics"]["items_accepted"]


def post(address: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    host, _, port = address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# ---------------------------------------------------------------------------- tests


def test_status_shows_every_part_and_the_bound_addresses(agent: AgentProcess) -> None:
    document = agent.cli_json("status")
    assert document["agent"]["pid"] == agent.pid
    assert document["agent"]["config"] == str(agent.config_path)
    for part in ("storage", "transform", "control", "discovery", "red"):
        assert document[part]["state"] == "running", (part, document[part])
    assert document["receiver"]["state"] == "running"
    for transport in ("grpc", "http"):
        address = document["receiver"][transport]["address"]
        assert re.fullmatch(r"127\.0\.0\.1:\d+", address) and not address.endswith(":0"), address
    assert document["storage"]["path"] == str(agent.state_dir / "coral-ebpf.duckdb")
    assert document["control"]["socket"] == str(agent.socket)
    assert stat.S_IMODE(agent.socket.stat().st_mode) == 0o600


def test_status_table_while_running(agent: AgentProcess) -> None:
    result = agent.cli("status")
    assert result.returncode == 0, result.stderr
    for part in ("probe", "storage", "transform", "receiver", "discovery", "red", "beyla", "control"):
        assert re.search(rf"^{part}\s", result.stdout, re.MULTILINE), (part, result.stdout)
    assert "running" in result.stdout and "grpc 127.0.0.1:" in result.stdout
    assert f"pid {agent.pid}" in result.stdout


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_exports_are_queryable_through_the_cli(agent: AgentProcess, transport: str) -> None:
    service, pid = f"e2e-{transport}-shop", 5000 + len(transport)
    before = agent.status()
    send(agent, transport, service, pid)

    requests = sum(count for count, _ in HTTP_MIX.values())
    http_rows = agent.query_until("http", service, lambda rows: sum(r["requests"] for r in rows) >= requests)
    rows = by_key(http_rows, "service", "method", "route")
    assert set(rows) == {(service, "GET", "/users/{id}"), (service, "POST", "/orders")}
    users = rows[(service, "GET", "/users/{id}")]
    assert (users["requests"], users["errors"]) == (45, 5)
    assert users["error_rate"] == pytest.approx(5 / 45, abs=1e-6)
    users_mix = {key: value for key, value in HTTP_MIX.items() if key[1] == "/users/{id}"}
    for key, value in expected_quantiles(users_mix).items():
        assert users[key] == pytest.approx(value), key
    orders = rows[(service, "POST", "/orders")]
    assert (orders["requests"], orders["errors"]) == (10, 0)
    assert 0 < orders["p50_ms"] <= 5 and orders["p99_ms"] <= 5

    grpc_rows = agent.query_until("grpc", service, lambda rows: sum(r["requests"] for r in rows) >= 23)
    assert [(r["requests"], r["errors"]) for r in grpc_rows] == [(23, 3)]
    assert 5 < grpc_rows[0]["p50_ms"] <= 10 and 50 < grpc_rows[0]["p99_ms"] <= 75

    sql_rows = agent.query_until("sql", service, lambda rows: sum(r["requests"] for r in rows) >= 14)
    assert [(r["requests"], r["errors"]) for r in sql_rows] == [(14, 2)]

    traces = agent.query_until("traces", service, lambda found: len(found) >= 1)
    (trace,) = traces
    assert trace["span_count"] == 2 and trace["status"] == "ERROR"
    spans = {span["name"]: span for span in trace["spans"]}
    assert spans["GET /users/{id}"]["http_status_code"] == 500
    assert spans["GET /users/{id}"]["process_pid"] == pid
    assert spans["SELECT users"]["parent_span_id"] == spans["GET /users/{id}"]["span_id"]
    assert spans["SELECT users"]["status_message"] == "timeout"

    # The counters say the same: 2 spans, and the metric points of two identical exports.
    after = agent.status()
    spans_before, points_before = receiver_totals(before, transport)
    spans_after, points_after = receiver_totals(after, transport)
    assert spans_after - spans_before == 2
    series = len(HTTP_MIX) + len(GRPC_MIX) + len(SQL_MIX)
    assert points_after - points_before == 2 * series
    written = after["storage"]["rows_written"]
    for table in ("beyla_http_metrics", "beyla_grpc_metrics", "beyla_sql_metrics", "otel_spans_raw"):
        assert written[table] > before["storage"]["rows_written"][table], table
    assert "beyla" in after["transform"]["sources"]


def test_bad_input_gets_the_right_status_and_the_agent_keeps_serving(agent: AgentProcess) -> None:
    address = agent.http_address()
    protobuf = {"Content-Type": "application/x-protobuf"}
    status, body = post(address, "/v1/traces", b"\xff\xff\xff not protobuf", protobuf)
    assert status == 400 and body
    status, body = post(address, "/v1/metrics", b"{not json", {"Content-Type": "application/json"})
    assert status == 400
    status, _ = post(address, "/v1/traces", b"hello", {"Content-Type": "text/plain"})
    assert status == 415
    bomb = gzip_bomb()  # 1 GiB of zeros in ~1 MB: small enough to be read, never inflated
    assert len(bomb) < MAX_BODY
    status, _ = post(address, "/v1/traces", bomb, {**protobuf, "Content-Encoding": "gzip"})
    assert status == 413
    status, _ = post(address, "/v1/traces", b"\0" * (MAX_BODY + 1), protobuf)
    assert status == 413
    # gRPC: a malformed message and a compressed bomb.
    grpc_address = agent.grpc_address()
    path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    reply = unary_call(grpc_address, path, b"\xff\xff\xff not protobuf", gzip_compressed=False)
    assert reply.get("grpc-status") == "3", reply  # INVALID_ARGUMENT
    reply = unary_call(grpc_address, path, bomb, gzip_compressed=True)
    assert reply.get("grpc-status") == "8", reply  # RESOURCE_EXHAUSTED
    # Still serving: a good export is stored and queryable; status answers; nothing crashed.
    send(agent, "http", "e2e-after-bad-input", 6001)
    rows = agent.query_until("http", "e2e-after-bad-input", lambda found: sum(r["requests"] for r in found) >= 55)
    assert sum(r["requests"] for r in rows) == 55
    document = agent.status()
    assert document["receiver"]["http"]["signals"]["traces"]["errors"].get("413", 0) >= 2
    assert document["receiver"]["http"]["signals"]["traces"]["errors"].get("400", 0) >= 1
    assert agent.process is not None and agent.process.poll() is None


def test_database_and_wal_are_private(agent: AgentProcess) -> None:
    database = agent.state_dir / "coral-ebpf.duckdb"
    wal = database.with_name(database.name + ".wal")

    def written() -> bool:
        send(agent, "grpc", "e2e-wal", 6002)
        return wal.exists()

    # DuckDB re-creates the WAL after checkpoints: send until one is there.
    eventually(written, 60, "a write-ahead log to appear", interval=0.3)
    for path in (database, wal):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.stat().st_uid == 0
    assert stat.S_IMODE(agent.state_dir.stat().st_mode) == 0o700


def test_a_bad_config_exits_2_naming_the_key_and_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"control:\n  socket: {tmp_path / 'control.sock'}\n"
        "otlp:\n  grpc_endpoint: 127.0.0.1:0\n  max_body_byte: 1MiB\n",
        encoding="utf-8",
    )
    result = run_cli("start", "--config", str(config), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "otlp.max_body_byte" in result.stderr and "config.yaml:6:" in result.stderr, result.stderr
    assert not (tmp_path / "state").exists()

    config.write_text(f"state_dir: {tmp_path / 'state'}\nstorage:\n  retention: forever\n", encoding="utf-8")
    result = run_cli("start", "--config", str(config), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "storage.retention" in result.stderr and "config.yaml:3:" in result.stderr, result.stderr


def test_a_second_agent_on_the_same_state_dir_exits_1(agent: AgentProcess, tmp_path: Path) -> None:
    # The same config: the state dir is locked (the control socket and ports are in use too).
    result = run_cli("start", "--config", str(agent.config_path), timeout=120)
    assert result.returncode == 1, result.stderr
    assert f"another coral-ebpf agent (pid {agent.pid})" in result.stderr, result.stderr
    assert str(agent.state_dir) in result.stderr
    # Another socket and other ports, the same state dir: still refused, by the lock.
    other = tmp_path / "other.yaml"
    other.write_text(
        f"state_dir: {agent.state_dir}\ncontrol:\n  socket: {tmp_path / 'other.sock'}\n"
        "otlp:\n  grpc_endpoint: 127.0.0.1:0\n  http_endpoint: 127.0.0.1:0\n",
        encoding="utf-8",
    )
    result = run_cli("start", "--config", str(other), timeout=120)
    assert result.returncode == 1, result.stderr
    assert f"another coral-ebpf agent (pid {agent.pid})" in result.stderr, result.stderr
    assert "different state_dir" in result.stderr
    # The first agent did not notice.
    assert agent.status()["agent"]["pid"] == agent.pid


def test_a_second_agent_on_the_same_control_socket_exits_1_before_starting_anything(
    agent: AgentProcess, tmp_path: Path
) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(
        f"state_dir: {tmp_path / 'state'}\ncontrol:\n  socket: {agent.socket}\n"
        "otlp:\n  grpc_endpoint: 127.0.0.1:0\n  http_endpoint: 127.0.0.1:0\n",
        encoding="utf-8",
    )
    result = run_cli("start", "--config", str(other), timeout=120)
    assert result.returncode == 1, result.stderr
    assert f"another coral-ebpf agent is already running (it answers on {agent.socket})" in result.stderr
    assert "storage open" not in result.stderr and "probe verdict" not in result.stderr  # refused up front
    assert agent.socket.exists() and agent.status()["agent"]["pid"] == agent.pid


def test_data_survives_sigterm_and_is_queried_read_only(agent: AgentProcess) -> None:
    send(agent, "grpc", "e2e-durable", 6003)
    rows = agent.query_until("http", "e2e-durable", lambda found: sum(r["requests"] for r in found) >= 55)
    assert sum(r["requests"] for r in rows) == 55
    running_rows = agent.cli_json("query", "http", "--since", "1h")
    running_traces = agent.cli_json("query", "traces", "--since", "1h", "--limit", "100")
    agent.stop()
    assert not agent.socket.exists()
    database = agent.state_dir / "coral-ebpf.duckdb"
    before = database.stat().st_mtime_ns
    stopped_rows = agent.cli_json("query", "http", "--since", "1h")
    # What this module sent over OTLP (services e2e-*) must read the same. The agent's own RED engine
    # also traces whatever else serves HTTP on the host (other tests' servers) and exports once more
    # at SIGTERM, so those rows may grow after `running_rows` was read.
    assert _without_rates(_sent(stopped_rows)) == _without_rates(_sent(running_rows))
    stopped_traces = agent.cli_json("query", "traces", "--since", "1h", "--limit", "100")
    assert {t["trace_id"] for t in _sent(stopped_traces, "root_service")} == {
        t["trace_id"] for t in _sent(running_traces, "root_service")
    }
    assert "e2e-durable" in {t["root_service"] for t in stopped_traces}
    assert database.stat().st_mtime_ns == before  # opened read-only
    status = agent.cli("status")
    assert status.returncode == 1 and "no coral-ebpf agent answers" in status.stderr, status.stderr
    assert os.path.exists(database)


def _sent(rows: list[dict[str, Any]], service_key: str = "service") -> list[dict[str, Any]]:
    """The rows of services this module sent over OTLP (all named e2e-*)."""
    return [row for row in rows if str(row[service_key]).startswith("e2e-")]


def _without_rates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rates divide by the window, which moves with the clock; everything else must be equal."""
    return sorted(
        ({k: v for k, v in row.items() if "rate" not in k or k == "error_rate"} for row in rows),
        key=lambda r: (r["service"], r["method"], r["route"]),
    )


def test_status_while_the_agent_is_starting_says_so(tmp_path: Path) -> None:
    """The control socket answers from the first second of start (before the probe and the BCC
    compiles): `status` reports the agent `starting` and each part's progress, not that there is none.
    (tests/integration/test_agent_early_status.py holds the probe back to check the early answer exactly.)"""
    starting = AgentProcess(tmp_path, {"discovery": {"enabled": False}, "beyla": {"enabled": False}})
    lock = starting.state_dir / "agent.lock"
    try:
        starting.launch()
        eventually(
            lambda: lock.exists() and lock.read_text().strip() == str(starting.pid), 60, "the agent to hold its lock"
        )
        result = eventually(
            lambda: starting.cli("status", "--json"), 60, "status to answer", until=lambda r: r.returncode == 0
        )
        document = json.loads(result.stdout)
        assert document["agent"]["pid"] == starting.pid and document["control"]["state"] == "running"
        if document["agent"]["state"] == "starting":  # unless it finished starting in the meantime
            assert {document[part]["state"] for part in PARTS} & {"pending", "starting"}
        else:
            assert document["agent"]["state"] == "running"
        starting.wait_for(lambda s: s["red"]["state"] == "running", timeout=240, what="the agent up")
        assert starting.status()["agent"]["state"] == "running"
        starting.stop()
    finally:
        starting.kill()
    # Stopped: the lock file still names the old pid, but no agent runs.
    result = starting.cli("status")
    assert result.returncode == 1 and "no coral-ebpf agent answers" in result.stderr, result.stderr


def test_status_without_an_agent_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"control:\n  socket: {tmp_path / 'nobody.sock'}\n", encoding="utf-8")
    for args in (["status"], ["status", "--json"]):
        result = run_cli(*args, "--config", str(config), timeout=60)
        assert result.returncode == 1, result
        assert f"no coral-ebpf agent answers on {tmp_path / 'nobody.sock'}" in result.stderr
        assert "sudo coral-ebpf start" in result.stderr
        if "--json" in args:  # stdout stays JSON for scripts: an error object
            error = json.loads(result.stdout)
            assert error["agent"] is None and "no coral-ebpf agent answers" in error["error"]
            assert "sudo coral-ebpf start" in error["hint"]
        else:
            assert result.stdout == ""
