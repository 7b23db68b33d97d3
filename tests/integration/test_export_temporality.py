"""export.otlp.temporality end to end: an SDK sends known counter and histogram values to a real
agent, which converts them and exports over gRPC to a real OTLP receiver (this project's, in the
test process) that records every point it gets: a counter, an explicit-bucket histogram and an
exponential one."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality as Proto
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from coral_ebpf.consumer import ConsumeResult
from coral_ebpf.otlp.receiver import OtlpReceiver
from coral_ebpf.otlp.settings import OtlpSettings
from tests.helpers.agent_process import AgentProcess
from tests.helpers.timing import eventually

pytestmark = pytest.mark.slow

ROUNDS = ((5, [1.0, 1.0, 1.0]), (7, [7.0, 7.0]), (11, [1.0, 30.0, 30.0, 30.0]))


class Recorder:
    """Every sum and histogram point the upstream receives, per metric name, in arrival order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sums: list[tuple[int, int, int]] = []  # (temporality, start, value)
        self.histograms: list[tuple[int, int, int, list[int]]] = []  # (temporality, start, count, buckets)
        self.exponential: list[tuple[int, int]] = []  # (temporality, count)

    def consume_metrics(self, request: ExportMetricsServiceRequest) -> ConsumeResult:
        with self.lock:
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        if metric.name == "work.done":
                            for point in metric.sum.data_points:
                                self.sums.append(
                                    (metric.sum.aggregation_temporality, point.start_time_unix_nano, point.as_int)
                                )
                        if metric.name == "work.latency":
                            data = metric.exponential_histogram
                            self.exponential.extend((data.aggregation_temporality, e.count) for e in data.data_points)
                        if metric.name == "work.duration":
                            for h in metric.histogram.data_points:
                                self.histograms.append(
                                    (
                                        metric.histogram.aggregation_temporality,
                                        h.start_time_unix_nano,
                                        h.count,
                                        list(h.bucket_counts),
                                    )
                                )
        return ConsumeResult()

    def consume_traces(self, request: ExportTraceServiceRequest) -> ConsumeResult:
        return ConsumeResult()

    def consume_logs(self, request: ExportLogsServiceRequest) -> ConsumeResult:
        return ConsumeResult()


@pytest.mark.parametrize(
    ("sdk", "target"),
    [(AggregationTemporality.CUMULATIVE, "delta"), (AggregationTemporality.DELTA, "cumulative")],
)
def test_sums_and_histograms_arrive_in_the_configured_temporality(
    sdk: AggregationTemporality, target: str, tmp_path: Path
) -> None:
    recorder = Recorder()
    receiver = OtlpReceiver(OtlpSettings(grpc_endpoint="127.0.0.1:0", http_endpoint=None), recorder)
    receiver.start()
    export = {"endpoint": f"http://{receiver.grpc_address}", "protocol": "grpc", "temporality": target}
    agent = AgentProcess(
        tmp_path / "a",
        {"agent_id": "edge", "discovery": {"enabled": False}, "export": {"otlp": export}},
    )
    provider = MeterProvider()  # replaced once the agent listens
    try:
        agent.start()
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(
                endpoint=f"http://{agent.http_address()}/v1/metrics",
                timeout=20,
                preferred_temporality={Counter: sdk, Histogram: sdk},
            ),
            export_interval_millis=3_600_000,
        )
        provider = MeterProvider(
            resource=Resource({"service.name": "temporal"}),
            metric_readers=[reader],
            views=[View(instrument_name="work.latency", aggregation=ExponentialBucketHistogramAggregation())],
        )
        meter = provider.get_meter("temporality-test")
        counter = meter.create_counter("work.done")
        histogram = meter.create_histogram("work.duration", unit="s")
        latency = meter.create_histogram("work.latency", unit="s")
        for added, durations in ROUNDS:
            counter.add(added, {"job": "a"})
            for seconds in durations:
                histogram.record(seconds, {"job": "a"})
                latency.record(seconds, {"job": "a"})
            assert provider.force_flush(30_000)

        eventually(
            lambda: len(recorder.sums) == 3 and len(recorder.histograms) == 3 and len(recorder.exponential) == 3,
            timeout=60,
            what=lambda: f"3 points of each: {recorder.sums} {recorder.histograms}; {agent.status()['export']}",
        )
        wanted = Proto.AGGREGATION_TEMPORALITY_DELTA if target == "delta" else Proto.AGGREGATION_TEMPORALITY_CUMULATIVE
        assert {point[0] for point in recorder.sums + recorder.histograms + recorder.exponential} == {wanted}
        exponential_counts = [count for _t, count in recorder.exponential]
        values = [value for _t, _start, value in recorder.sums]
        counts = [count for _t, _start, count, _b in recorder.histograms]
        # The SDK's default bounds (0, 5, 10, 25, 50, ...): 1 falls in bucket 1, 7 in bucket 2, 30 in bucket 4.
        round_buckets = [{1: 3}, {2: 2}, {1: 1, 4: 3}]
        if target == "delta":
            assert values == [5, 7, 11] and counts == exponential_counts == [3, 2, 4]
            starts = [start for _t, start, _v in recorder.sums]
            assert starts == sorted(starts) and len(set(starts)) == 3  # each interval starts where the last ended
            expected = [round_buckets[i] for i in range(3)]
        else:
            assert values == [5, 12, 23] and counts == exponential_counts == [3, 5, 9]
            assert len({start for _t, start, _v in recorder.sums}) == 1  # one start time: one running total
            expected = [{1: 3}, {1: 3, 2: 2}, {1: 4, 2: 2, 4: 3}]
        for (_t, _start, _count, buckets), nonzero in zip(recorder.histograms, expected, strict=True):
            assert {index: n for index, n in enumerate(buckets) if n} == nonzero
        status = agent.status()["export"]
        assert status["temporality"] == target and status["temporality_converted_points"] == 9
        assert status["temporality_baselined_points"] == 0 and status["temporality_series"] == 3
        with urllib.request.urlopen(f"http://{agent.telemetry_address()}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert "coral_ebpf_export_temporality_converted_points_total 9" in metrics.splitlines()
        assert "coral_ebpf_export_temporality_baselined_points_total 0" in metrics.splitlines()
        agent.stop()
    finally:
        provider.shutdown()
        agent.kill()
        receiver.stop(5)
