"""After `coral-ebpf start` restarts, only series it really stored before are baselined.

A sender (the OpenTelemetry SDK, cumulative histograms) outlives the agent. Its series that the
agent stored before the restart restart from a baseline (their first point after the restart may
overlap what is stored); a series first seen after the restart keeps its first point whole,
although its start_time is older than every stored row.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from tests.helpers import beyla_otlp
from tests.helpers.agent_process import running_agent
from tests.helpers.processes import free_port

SERVICE = "restart-baseline"


def _requests_by_route(agent: Any) -> dict[str, int]:
    result = agent.cli_json("query", "http", "--service", SERVICE, "--since", "1h")
    return {row["route"]: row["requests"] for row in result}


def _wait_for(agent: Any, expected: dict[str, int], timeout: float = 60) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        found = _requests_by_route(agent)
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_a_new_series_after_a_restart_keeps_its_first_point(tmp_path: Path) -> None:
    port = free_port()
    settings = {
        "otlp": {"grpc_endpoint": f"127.0.0.1:{port}", "http_endpoint": None},
        "storage": {"flush_interval": "200ms"},
        "discovery": {"enabled": False},
        "beyla": {"enabled": False},
    }
    proto = beyla_otlp.beyla_resource(SERVICE, pid=4711)
    resource = Resource(
        {kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value") for kv in proto.attributes}
    )
    # Reconnect quickly: the channels see the agent go away and come back.
    fast_reconnect = (("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500))
    buckets = View(instrument_type=Histogram, aggregation=ExplicitBucketHistogramAggregation([0.01, 0.1, 1.0]))

    def sender() -> tuple[MeterProvider, Any]:
        exporter = OTLPMetricExporter(
            endpoint=f"127.0.0.1:{port}",
            insecure=True,
            timeout=20,
            channel_options=fast_reconnect,  # type: ignore[arg-type]
        )
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        provider = MeterProvider(resource=resource, metric_readers=[reader], views=[buckets])
        return provider, provider.get_meter("beyla").create_histogram("http.server.request.duration", unit="s")

    # Two exporters of one process (same resource). The Python SDK starts a cumulative series at its
    # first observation (Beyla's Go SDK at the exporter's start): "/new" is started before anything
    # is stored but first exported after the restart, so its start_time is older than every stored row.
    old_sender, old_duration = sender()
    new_sender, new_duration = sender()

    def record(histogram: Any, route: str, times: int) -> None:
        attributes = beyla_otlp.http_server_attributes(proto, "GET", route, 200)
        for _ in range(times):
            histogram.record(0.005, attributes)

    try:
        record(new_duration, "/new", 100)
        with running_agent(tmp_path / "agent", settings) as agent:
            record(old_duration, "/old", 100)
            assert old_sender.force_flush(30_000)
            assert _wait_for(agent, {"/old": 100}) == {"/old": 100}
        with running_agent(tmp_path / "agent", settings) as agent:
            record(old_duration, "/old", 30)  # between the last stored point and the restart: the baseline absorbs it
            record(new_duration, "/new", 30)  # 130 observations of a series the agent never stored
            assert old_sender.force_flush(30_000) and new_sender.force_flush(30_000)
            record(old_duration, "/old", 10)
            assert old_sender.force_flush(30_000)
            assert _wait_for(agent, {"/old": 110, "/new": 130}) == {"/old": 110, "/new": 130}
            outcomes = agent.status()["transform"]["cumulative_points"]
            assert outcomes.get("first_point_baseline") == 1, outcomes
    finally:
        old_sender.shutdown()
        new_sender.shutdown()
