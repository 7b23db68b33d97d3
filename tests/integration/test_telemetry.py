"""The operator listener of a real `coral-ebpf start`: /metrics scraped by a real Prometheus,
/-/healthy and /-/ready, and TLS + bearer token off loopback."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.resources import Resource
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.helpers.agent_process import REPO, AgentProcess, call_failed, run_cli
from tests.helpers.prometheus import Prometheus, running_prometheus
from tests.helpers.sdk_meter import beyla_meter_provider

pytestmark = pytest.mark.slow

SETTINGS = {"storage": {"flush_interval": "200ms"}, "red": {"export_interval": "1s"}}
SERVICE = "prom-shop"
FAMILY = "http_server_request_duration_seconds"
# (method, route, status): (count, seconds each). p99 of each route lands inside a bucket, not on a bound.
TRAFFIC = {
    ("GET", "/users/{id}", 200): (150, 0.02),
    ("GET", "/users/{id}", 500): (5, 0.3),
    ("POST", "/orders", 201): (40, 0.004),
    ("POST", "/orders", 503): (10, 0.07),
}
RANGE_SECONDS = 60


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    running = AgentProcess(tmp_path_factory.mktemp("agent-telemetry"), SETTINGS)
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


def get(url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None) -> tuple[int, Any, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20, context=context) as response:
            body = response.read()
            if response.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            return response.status, response.headers, body.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


class Sender:
    """An SDK meter (cumulative, Beyla's buckets) whose every flush exports what was recorded so far."""

    def __init__(self, agent: AgentProcess) -> None:
        exporter = OTLPMetricExporter(endpoint=f"http://{agent.http_address()}/v1/metrics", timeout=20)
        resource = Resource({"service.name": SERVICE, "service.namespace": "shop", "telemetry.sdk.name": "beyla"})
        self.provider = beyla_meter_provider(exporter, resource)
        self.histogram = self.provider.get_meter("coral-test").create_histogram("http.server.request.duration", "s")

    def record(self, traffic: dict[tuple[str, str, int], tuple[int, float]]) -> None:
        for (method, route, status), (count, seconds) in traffic.items():
            attributes: dict[str, str | int] = {
                "http.request.method": method,
                "http.route": route,
                "http.response.status_code": status,
            }
            for _ in range(count):
                self.histogram.record(seconds, attributes)
        assert self.provider.force_flush(30_000)


def test_metrics_in_both_formats_agree_with_status(agent: AgentProcess) -> None:
    base = f"http://{agent.telemetry_address()}"
    status, headers, text = get(f"{base}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in parse_text(text)}
    status, headers, openmetrics = get(f"{base}/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    om_families = {family.name: family for family in parse_openmetrics(openmetrics)}  # type: ignore[no-untyped-call]
    for name in (FAMILY, "rpc_server_duration_seconds", "db_client_operation_duration_seconds"):
        assert families[name].type == "histogram" and om_families[name].type == "histogram"
    build = om_families["coral_ebpf_build"]
    assert build.type == "info" and build.samples[0].labels["version"]
    assert om_families["coral_ebpf_receiver_items"].type == "counter"
    parts = {sample.labels["part"]: sample.value for sample in families["coral_ebpf_part_up"].samples}
    assert parts["storage"] == 1 and parts["receiver"] == 1 and parts["telemetry"] == 1
    # The receiver's counters are the ones `status` shows.
    document = agent.status()
    accepted = {
        (sample.labels["transport"], sample.labels["signal"]): sample.value
        for sample in families["coral_ebpf_receiver_items"].samples
        if sample.labels["outcome"] == "accepted"
    }
    for transport in ("grpc", "http"):
        for signal, counters in document["receiver"][transport]["signals"].items():
            assert accepted[(transport, signal)] <= counters["items_accepted"]
    assert document["telemetry"]["scrapes"] >= 2
    status, headers, unzipped = get(f"{base}/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and "# TYPE coral_ebpf_build_info" in unzipped


def test_healthy_and_ready_say_why(agent: AgentProcess) -> None:
    base = f"http://{agent.telemetry_address()}"
    status, headers, body = get(f"{base}/-/healthy")
    assert status == 200 and body.startswith("alive: coral-ebpf") and headers["Content-Type"].startswith("text/plain")
    status, _headers, body = get(f"{base}/-/ready")
    assert status == 200 and body.startswith("ready: OTLP on grpc 127.0.0.1:"), body
    status, _headers, body = get(f"{base}/nothing")
    assert status == 404 and "/metrics" in body


def test_prometheus_rate_and_p99_agree_with_query(agent: AgentProcess, tmp_path: Path) -> None:
    """A real Prometheus scrapes the agent every second. Each series is created (one request each)
    more than a range before the measured traffic, so every series covers the whole range in
    Prometheus and `rate` sees all of the traffic; `coral-ebpf query http --since 1m`, at the
    same time, sees the same traffic (the creating requests fall before its window)."""
    with running_prometheus(tmp_path / "prometheus", [agent.telemetry_address()]) as prom:
        prom.wait_for_up()
        sender = Sender(agent)
        sender.record(dict.fromkeys(TRAFFIC, (1, 0.02)))
        created = time.time()
        selector = f'{FAMILY}_count{{service_name="{SERVICE}"}}'
        deadline = time.monotonic() + 60
        while prom.scalar(f"sum({selector})") != len(TRAFFIC):
            assert time.monotonic() < deadline, prom.query(selector)
            time.sleep(0.5)
        time.sleep(max(0.0, created + RANGE_SECONDS + 2 - time.time()))
        sender.record(TRAFFIC)
        total = len(TRAFFIC) + sum(count for count, _ in TRAFFIC.values())
        deadline = time.monotonic() + 60
        while prom.scalar(f"sum({selector})") != total:
            assert time.monotonic() < deadline, prom.query(selector)
            time.sleep(0.5)
        time.sleep(1.5)  # one more scrape, so the last sample is not the one where the counter moved
        at = time.time()
        rows = agent.cli_json("query", "http", "--service", SERVICE, "--since", f"{RANGE_SECONDS}s")
        rate = prom.scalar(f"sum(rate({selector}[1m]))", at)
        p99 = {window: _p99_by_route(prom, window, at) for window in ("1m", "5m")}
        error_selector = f'{FAMILY}_count{{service_name="{SERVICE}", http_response_status_code=~"5.."}}'
        errors = prom.scalar(f"sum(rate({error_selector}[1m]))", at)
        # Every expression of the shipped dashboard parses and evaluates in this Prometheus.
        for expression in _dashboard_expressions():
            prom.query(expression.replace("$__rate_interval", "1m").replace("$service", ".*"), at)
    sender.provider.shutdown()
    requests = sum(count for count, _ in TRAFFIC.values())
    assert sum(row["requests"] for row in rows) == requests, json.dumps(rows, indent=1)
    # Prometheus extrapolates the increase to the range's ends: at most one scrape interval in 60 s.
    assert rate is not None and rate * RANGE_SECONDS == pytest.approx(requests, rel=0.04), rate
    assert errors is not None
    assert errors * RANGE_SECONDS == pytest.approx(sum(row["errors"] for row in rows), rel=0.04), errors
    by_route = {row["route"]: row for row in rows}
    assert set(p99["1m"]) == set(p99["5m"]) == set(by_route) == {"/users/{id}", "/orders"}
    for route, row in by_route.items():
        # [1m] holds the measured traffic, as the query does: the quantiles agree. Not to the digit:
        # when scrapes jitter (a loaded machine), `rate` extrapolates each bucket series by its own
        # sample times, which moves the interpolated quantile by a hair (seen: 422.586 vs 422.5 ms).
        assert p99["1m"][route] * 1000 == pytest.approx(row["p99_ms"], rel=5e-3), (route, p99, rows)
        # [5m] reaches back before the series existed; Prometheus then extrapolates each bucket series
        # towards zero on its own (by its first value), which moves the quantile by a hair.
        assert p99["5m"][route] * 1000 == pytest.approx(row["p99_ms"], rel=5e-3), (route, p99, rows)


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads((REPO / "deploy" / "grafana" / "coral-ebpf.json").read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def _p99_by_route(prom: Prometheus, window: str, at: float) -> dict[str, float]:
    buckets = f'{FAMILY}_bucket{{service_name="{SERVICE}"}}'
    expression = f"histogram_quantile(0.99, sum by (le, http_route) (rate({buckets}[{window}])))"
    return {row["metric"]["http_route"]: float(row["value"][1]) for row in prom.query(expression, at)}


# ------------------------------------------------------------------------------ ports and status


def test_default_port_taken_fails_the_part_and_status_exits_1(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 9464))
    holder.listen()
    try:
        agent = AgentProcess(tmp_path, {**SETTINGS, "telemetry": {"endpoint": "127.0.0.1:9464"}})
        try:
            document = agent.start()
            assert document["telemetry"]["state"] == "failed"
            assert "cannot listen for operators (/metrics) on 127.0.0.1:9464" in document["telemetry"]["reason"]
            assert document["receiver"]["state"] == "running" and document["storage"]["state"] == "running"
            table = agent.cli("status")
            assert table.returncode == 0 and "failed: telemetry" in table.stdout, table  # the agent answered
            checked = agent.cli("status", "--check")
            assert checked.returncode == 1 and "failed: telemetry (exit code 1)" in checked.stdout, checked
            as_json = agent.cli("status", "--json", "--check")
            assert as_json.returncode == 1 and json.loads(as_json.stdout)["telemetry"]["state"] == "failed"
            agent.stop()
        finally:
            agent.kill()
    finally:
        holder.close()


def test_an_explicit_endpoint_that_cannot_be_bound_is_a_start_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        agent = AgentProcess(tmp_path, {**SETTINGS, "telemetry": {"endpoint": f"127.0.0.1:{port}"}})
        result = run_cli("start", "--config", str(agent.config_path), timeout=180)
    assert result.returncode == 1, result
    assert f"cannot listen for operators (/metrics) on 127.0.0.1:{port}" in result.stderr


def test_status_check_exits_0_when_no_part_failed(agent: AgentProcess) -> None:
    assert agent.cli("status", "--check").returncode == 0
    assert agent.cli("status", "--json", "--check").returncode == 0


# ------------------------------------------------------------------------------ security


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def test_off_loopback_without_tls_and_token_refuses_to_start(tmp_path: Path) -> None:
    refused = AgentProcess(tmp_path, {**SETTINGS, "telemetry": {"endpoint": "0.0.0.0:0"}})
    result = run_cli("start", "--config", str(refused.config_path), timeout=120)
    assert result.returncode == 2, result
    assert "telemetry.endpoint 0.0.0.0:0 is not a loopback address" in result.stderr
    assert "telemetry.tls_cert, telemetry.tls_key and telemetry.token_file" in result.stderr


def test_a_readable_token_file_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret\n")
    token.chmod(0o644)
    refused = AgentProcess(tmp_path, {**SETTINGS, "telemetry": {"endpoint": "127.0.0.1:0", "token_file": str(token)}})
    result = run_cli("start", "--config", str(refused.config_path), timeout=120)
    assert result.returncode == 2 and "has mode 0644" in result.stderr and "chmod 600" in result.stderr, result


def test_off_loopback_with_tls_and_token(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    token.chmod(0o600)
    telemetry = {"endpoint": "0.0.0.0:0", "tls_cert": str(cert), "tls_key": str(key), "token_file": str(token)}
    agent = AgentProcess(tmp_path / "agent", {**SETTINGS, "telemetry": telemetry})
    try:
        document = agent.start()
        assert document["telemetry"]["tls"] and document["telemetry"]["token"]
        port = agent.telemetry_address().rsplit(":", 1)[1]
        url = f"https://127.0.0.1:{port}/metrics"
        context = ssl.create_default_context(cafile=str(cert))
        assert get(url, context=context)[0] == 401
        assert get(url, {"Authorization": "Bearer wrong"}, context)[0] == 401
        status, _headers, body = get(url, {"Authorization": "Bearer s3cret-token"}, context)
        assert status == 200 and "coral_ebpf_build_info" in body
        with pytest.raises(OSError):  # plain HTTP is not served (the TLS side hangs up)
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        assert agent.status()["telemetry"]["unauthorized"] == 2
        agent.stop()
    finally:
        agent.kill()
