"""Living next to another collector: the default OTLP ports taken by another process, and
Beyla's private loopback link that does not depend on them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from tests.helpers.agent_process import AgentProcess, run_cli

pytestmark = pytest.mark.slow

DEFAULTS = {"grpc_endpoint": "127.0.0.1:4317", "http_endpoint": "127.0.0.1:4318"}
HOLDER = """
import socket, sys, time
held = []
for port in (4317, 4318):
    s = socket.socket(); s.bind(("127.0.0.1", port)); s.listen(); held.append(s)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def other_collector() -> Iterator[subprocess.Popen[str]]:
    """A process holding 4317 and 4318, as an OpenTelemetry Collector or Alloy would."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield process
    finally:
        process.kill()
        process.wait()


def test_taken_default_ports_are_named_and_the_agent_runs(
    other_collector: subprocess.Popen[str], tmp_path: Path
) -> None:
    agent = AgentProcess(tmp_path, {"otlp": DEFAULTS, "red": {"export_interval": "1s"}})
    try:
        document = agent.start()
        receiver = document["receiver"]
        assert receiver["state"] == "running" and not receiver["grpc"]["enabled"] and not receiver["http"]["enabled"]
        notes = receiver["notes"]
        assert len(notes) == 2
        for note, key in zip(notes, ("otlp.grpc_endpoint", "otlp.http_endpoint"), strict=True):
            assert note.startswith(f"{key} 127.0.0.1:43")
            assert f"taken by pid {other_collector.pid} (python" in note, note
        holders = {taken["key"]: taken["holders"] for taken in receiver["ports_taken"]}
        assert holders["otlp.http_endpoint"][0]["pid"] == other_collector.pid
        assert "taken by pid" in agent.log_text()

        with urllib.request.urlopen(f"http://{agent.telemetry_address()}/-/ready", timeout=10) as response:
            body = response.read().decode()
        assert response.status == 200 and f"taken by pid {other_collector.pid}" in body, body

        # Beyla's link does not use either port, and what arrives on it is stored.
        link = document["beyla"]["link"]["http"]["address"]
        host, port = link.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) not in (4317, 4318)
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"http://{link}/v1/metrics", timeout=20), export_interval_millis=3_600_000
        )
        provider = MeterProvider(resource=Resource({"service.name": "via-link"}), metric_readers=[reader])
        histogram = provider.get_meter("t").create_histogram("http.server.request.duration", unit="s")
        for _ in range(7):
            histogram.record(0.01, {"http.request.method": "GET", "http.route": "/x"})
        assert provider.force_flush(30_000)
        provider.shutdown()
        deadline = time.monotonic() + 60
        while True:
            rows = agent.cli_json("query", "http", "--service", "via-link", "--since", "1h")
            if sum(row["requests"] for row in rows) == 7 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert sum(row["requests"] for row in rows) == 7, rows
        beyla = agent.status()["beyla"]["link"]["http"]["signals"]["metrics"]
        assert beyla["items_accepted"] >= 1
        with urllib.request.urlopen(f"http://{agent.telemetry_address()}/metrics", timeout=10) as response:
            assert 'transport="beyla_link_http"' in response.read().decode()
        agent.stop()
    finally:
        agent.kill()


def test_a_configured_endpoint_that_is_taken_stays_a_start_error(
    other_collector: subprocess.Popen[str], tmp_path: Path
) -> None:
    # 0.0.0.0:4318 is not the default endpoint: the operator chose it, so it must work or the start fails.
    agent = AgentProcess(tmp_path, {"otlp": {"grpc_endpoint": "", "http_endpoint": "0.0.0.0:4318"}})
    result = run_cli("start", "--config", str(agent.config_path), timeout=180)
    assert result.returncode == 1, result
    assert "cannot listen for OTLP/HTTP on 0.0.0.0:4318" in result.stderr, result.stderr


def test_status_json_names_the_holder(other_collector: subprocess.Popen[str], tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path, {"otlp": {**DEFAULTS, "grpc_endpoint": "127.0.0.1:0"}})
    try:
        agent.start()
        result = agent.cli("status", "--json")
        document = json.loads(result.stdout)
        assert document["receiver"]["grpc"]["enabled"] and not document["receiver"]["http"]["enabled"]
        assert [taken["key"] for taken in document["receiver"]["ports_taken"]] == ["otlp.http_endpoint"]
        table = agent.cli("status", columns=250)
        assert "otlp.http_endpoint 127.0.0.1:4318 is taken by pid" in table.stdout, table.stdout
        agent.stop()
    finally:
        agent.kill()
