"""OTLP export upstream, end to end: agent A forwards what it accepts to agent B (a real OTLP
receiver), over gRPC and HTTP; with B down, A queues on disk (across its own restart) and
delivers everything once B is back."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from tests.helpers.agent_process import AgentProcess, Status
from tests.helpers.processes import free_port

pytestmark = pytest.mark.slow

FAST_RETRY = {"retry_initial": "200ms", "retry_max": "1s", "timeout": "5s"}
# Without discovery the built-in RED engine has no target: it would otherwise measure the agents'
# own OTLP traffic (they are HTTP and gRPC servers on this host) and add spans to the counts.
QUIET = {"storage": {"flush_interval": "200ms"}, "discovery": {"enabled": False}}


def send_traffic(agent: AgentProcess, service: str, spans: int, requests: int) -> None:
    """`spans` SERVER spans over gRPC and one HTTP histogram of `requests` requests over HTTP, to `agent`."""
    resource = Resource({"service.name": service})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(GrpcSpanExporter(endpoint=agent.grpc_address(), insecure=True, timeout=20))
    )
    tracer = tracer_provider.get_tracer("export-test")
    for index in range(spans):
        with tracer.start_as_current_span(f"GET /item/{index % 5}", kind=SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", "GET")
            span.set_attribute("http.route", "/item/{id}")
            span.set_attribute("http.response.status_code", 200)
    assert tracer_provider.force_flush(30_000)
    tracer_provider.shutdown()
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"http://{agent.http_address()}/v1/metrics", timeout=20),
        export_interval_millis=3_600_000,
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    histogram = meter_provider.get_meter("export-test").create_histogram("http.server.request.duration", unit="s")
    for _ in range(requests):
        histogram.record(0.02, {"http.request.method": "GET", "http.route": "/item/{id}"})
    assert meter_provider.force_flush(30_000)
    meter_provider.shutdown()


def stored_spans(status: Status) -> int:
    return int(status["storage"]["rows_written"]["otel_spans_raw"])


def http_requests(agent: AgentProcess, service: str) -> int:
    rows = agent.cli_json("query", "http", "--service", service, "--since", "1h")
    return sum(int(row["requests"]) for row in rows)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def upstream(root: Path, transport: str, port: int) -> AgentProcess:
    endpoints = {"grpc_endpoint": "127.0.0.1:0", "http_endpoint": "127.0.0.1:0"}
    endpoints[f"{transport}_endpoint"] = f"127.0.0.1:{port}"
    return AgentProcess(root, {**QUIET, "agent_id": "upstream", "otlp": endpoints})


def exporter(root: Path, protocol: str, port: int, **otlp: Any) -> AgentProcess:
    export = {"endpoint": f"http://127.0.0.1:{port}", "protocol": protocol, **FAST_RETRY, **otlp}
    settings = {**QUIET, "agent_id": "edge-agent", "export": {"otlp": export}}
    return AgentProcess(root, settings)


@pytest.mark.parametrize(("protocol", "transport"), [("grpc", "grpc"), ("http/protobuf", "http")])
def test_everything_accepted_arrives_upstream_exactly(protocol: str, transport: str, tmp_path: Path) -> None:
    port = free_port()
    b = upstream(tmp_path / "b", transport, port)
    a = exporter(tmp_path / "a", protocol, port)
    service = f"exported-{transport}"
    try:
        b.start()
        a.start()
        send_traffic(a, service, spans=120, requests=37)
        wait_until(lambda: stored_spans(b.status()) == 120 and http_requests(b, service) == 37, "B to store it all")
        assert http_requests(a, service) == 37 and stored_spans(a.status()) == 120
        export = a.status()["export"]
        assert export["state"] == "running" and export["exported_items"]["traces"] == 120
        assert export["queue_requests"] == 0 and export["failed_requests"] == 0
        b_status = b.status()
        accepted = b_status["receiver"][transport]["signals"]["traces"]["items_accepted"]
        assert accepted == 120  # nothing sent twice
        with urllib.request.urlopen(f"http://{a.telemetry_address()}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert 'coral_ebpf_export_items_total{signal="traces"} 120' in metrics
        a.stop()
        b.stop()
        with duckdb.connect(str(b.state_dir / "coral-ebpf.duckdb"), read_only=True) as connection:
            attributes = [row[0] for row in connection.execute("SELECT attributes FROM otel_resources").fetchall()]
        assert any('"coral.agent.id":"edge-agent"' in text.replace(" ", "") for text in attributes), attributes
    finally:
        a.kill()
        b.kill()


def scrape(agent: AgentProcess) -> dict[str, float]:
    """The agent's /metrics as {series: value} (HELP/TYPE lines left out)."""
    with urllib.request.urlopen(f"http://{agent.telemetry_address()}/metrics", timeout=10) as response:
        text = response.read().decode()
    series = (line.rpartition(" ") for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, _, value in series}


OUTAGE = 60.0  # seconds the upstream stays down while data keeps arriving (the "a minute")


def test_upstream_down_a_minute_then_back_loses_nothing_even_across_a_restart(tmp_path: Path) -> None:
    port = free_port()
    a = exporter(tmp_path / "a", "http/protobuf", port)
    b = upstream(tmp_path / "b", "http", port)
    service = "exported-while-down"
    try:
        a.start()
        down_since = time.monotonic()
        send_traffic(a, service, spans=60, requests=11)
        spans, requests = 60, 11
        wait_until(lambda: a.status()["export"]["retries"] >= 2, "A to retry against the missing upstream")
        export = a.status()["export"]
        assert export["queue_requests"] >= 2 and "ConnectionRefusedError" in export["last_error"], export
        metrics = scrape(a)
        assert metrics["coral_ebpf_export_retries_total"] >= 2
        assert metrics["coral_ebpf_export_last_error_timestamp_seconds"] == pytest.approx(time.time(), abs=30)
        assert metrics["coral_ebpf_export_queue_requests"] >= 2 and metrics["coral_ebpf_export_requests_total"] == 0
        # A restarts while B is still down: the queue on disk is taken over.
        a.stop()
        queue_dir = a.state_dir / "export-queue"
        queued = sorted(path.name for path in queue_dir.iterdir())
        assert queued and all(path.stat().st_mode & 0o077 == 0 for path in queue_dir.iterdir())
        a.start()
        assert a.status()["export"]["recovered_requests"] == len(queued)
        # Data keeps arriving for the rest of the minute; the retries go on and are visible all along.
        retries_before = 0.0
        while time.monotonic() - down_since < OUTAGE:
            send_traffic(a, service, spans=20, requests=3)
            spans, requests = spans + 20, requests + 3
            export = a.status()["export"]
            assert export["last_error"] and export["exported_requests"] == 0 and export["dropped_requests"] == 0
            retries = scrape(a)["coral_ebpf_export_retries_total"]
            assert retries >= retries_before
            retries_before = retries
            time.sleep(min(10.0, max(0.0, OUTAGE - (time.monotonic() - down_since))))  # pacing, not a wait
        outage_so_far = time.monotonic() - down_since
        assert outage_so_far >= OUTAGE and retries_before > 2
        assert a.status()["export"]["queue_requests"] >= 4
        b.start()
        wait_until(
            lambda: stored_spans(b.status()) == spans and http_requests(b, service) == requests,
            f"B to receive the backlog of {spans} spans and {requests} requests",
        )
        export = a.status()["export"]
        assert export["queue_requests"] == 0 and export["dropped_requests"] == 0 and export["failed_requests"] == 0
        assert scrape(a)["coral_ebpf_export_queue_requests"] == 0
        time.sleep(2)  # nothing more arrives late (no duplicate)
        assert stored_spans(b.status()) == spans and http_requests(b, service) == requests
        a.stop()
        b.stop()
    finally:
        a.kill()
        b.kill()


def test_a_full_queue_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    port = free_port()  # no upstream at all
    a = exporter(tmp_path / "a", "grpc", port, queue_max_bytes="4KiB")
    try:
        a.start()
        for _ in range(5):  # five requests of ~2 KiB each into a 4 KiB queue
            send_traffic(a, "overflow", spans=10, requests=1)
        wait_until(lambda: a.status()["export"]["dropped_requests"] >= 1, "the queue to overflow")
        export = a.status()["export"]
        assert export["queue_bytes"] <= 4096 and export["dropped_bytes"] > 0
        # The local store keeps everything.
        wait_until(lambda: stored_spans(a.status()) == 50, f"50 spans stored, not {stored_spans(a.status())}", 30)
        a.stop()
    finally:
        a.kill()


def test_refuse_policy_throttles_ingestion(tmp_path: Path) -> None:
    port = free_port()
    a = exporter(tmp_path / "a", "grpc", port, queue_max_bytes="2KiB", queue_full="refuse")
    try:
        a.start()
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"http://{a.http_address()}/v1/metrics", timeout=5),
            export_interval_millis=3_600_000,
        )
        provider = MeterProvider(resource=Resource({"service.name": "throttled"}), metric_readers=[reader])
        counter = provider.get_meter("t").create_counter("work")
        for round_ in range(30):
            counter.add(1, {"round": str(round_), "padding": "x" * 200})
            provider.force_flush(10_000)
        provider.shutdown()
        status = a.status()
        refused = status["receiver"]["http"]["signals"]["metrics"]["items_refused"]
        assert refused > 0 and status["export"]["queue_bytes"] <= 2048, status["export"]
        assert status["export"]["dropped_requests"] == 0
        a.stop()
    finally:
        a.kill()
