"""The OpenTelemetry SDK's base-2 exponential histograms, through a running `coral-ebpf start`:
stored, turned into deltas, and queried with percentiles as exact as their buckets; /metrics
still shows the series (folded into explicit buckets).
"""

from __future__ import annotations

import math
import random
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from coral_ebpf.storage import exponential
from tests.helpers.agent_process import AgentProcess, call_failed

SETTINGS = {"storage": {"flush_interval": "200ms"}}
SERVICE = "exp-sdk"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    running = AgentProcess(tmp_path_factory.mktemp("agent-exphist"), SETTINGS)
    try:
        running.start()
        yield running
        running.stop()
    finally:
        running.kill()


@pytest.fixture(autouse=True)
def _agent_log_on_failure(request: pytest.FixtureRequest, agent: AgentProcess) -> Iterator[None]:
    yield
    if call_failed(request.node):
        print(agent.log_tail())


def _true_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def test_sdk_exponential_histograms_give_percentiles_within_one_bucket(agent: AgentProcess) -> None:
    exporter = OTLPMetricExporter(
        endpoint=f"http://{agent.grpc_address()}",
        insecure=True,
        preferred_temporality={Histogram: AggregationTemporality.CUMULATIVE},
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    view = View(instrument_name="http.server.request.duration", aggregation=ExponentialBucketHistogramAggregation())
    provider = MeterProvider(resource=Resource.create({"service.name": SERVICE}), metric_readers=[reader], views=[view])
    histogram = provider.get_meter("coral-test").create_histogram("http.server.request.duration", unit="s")
    rng = random.Random(11)
    attributes: dict[str, str | int] = {
        "http.request.method": "GET",
        "http.route": "/items",
        "http.response.status_code": 200,
    }
    fast = [rng.uniform(0.00012, 0.0006) for _ in range(300)]  # sub-millisecond
    for value in fast:
        histogram.record(value, attributes)
    provider.force_flush()  # first cumulative point
    slow = [rng.uniform(0.8, 3.0) for _ in range(30)]  # the SDK must lower its scale to hold both
    for value in slow:
        histogram.record(value, attributes)
    provider.force_flush()  # second cumulative point: stored as the difference
    provider.shutdown()

    everything = fast + slow
    rows = agent.query_until("http", SERVICE, lambda r: r and r[0]["requests"] == len(everything))
    row = rows[0]
    # The SDK (160 buckets at most) ends at scale 3 or so for this range: each bucket spans a factor of base.
    for key, q in (("p50", 0.5), ("p99", 0.99)):
        truth_ms = _true_quantile(everything, q) * 1000
        assert row[f"{key}_bound"] is None
        assert row[f"{key}_ms"] == pytest.approx(truth_ms, rel=exponential.base(3) - 1), key

    # /metrics: the same count and sum, in the default explicit buckets.
    with urllib.request.urlopen(f"http://{agent.telemetry_address()}/metrics", timeout=10) as response:
        text = response.read().decode()
    count_line = next(
        line
        for line in text.splitlines()
        if line.startswith("http_server_request_duration_seconds_count") and SERVICE in line
    )
    assert float(count_line.rsplit(" ", 1)[1]) == len(everything)
    assert any(
        line.startswith("http_server_request_duration_seconds_bucket") and 'le="0.005"' in line and SERVICE in line
        for line in text.splitlines()
    )
