"""Temporality conversion of exported metrics: known points in, known points out, per series."""

from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import HistogramDataPoint, Metric, NumberDataPoint

from coral_ebpf.export.temporality import CUMULATIVE, DELTA, Temporality, TemporalityConverter

S = 1_000_000_000  # one second in ns
T0 = 1_000 * S  # the converter starts here


def request(metric: Metric, service: str = "svc") -> ExportMetricsServiceRequest:
    message = ExportMetricsServiceRequest()
    resource_metrics = message.resource_metrics.add()
    resource_metrics.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    resource_metrics.scope_metrics.add().metrics.append(metric)
    return message


def attrs(route: str) -> list[KeyValue]:
    return [KeyValue(key="route", value=AnyValue(string_value=route))]


def counter(temporality: int, points: list[tuple[int, int, int, str]], monotonic: bool = True) -> Metric:
    metric = Metric(name="requests")
    metric.sum.aggregation_temporality = temporality  # type: ignore[assignment]
    metric.sum.is_monotonic = monotonic
    for start, time, value, route in points:
        metric.sum.data_points.append(
            NumberDataPoint(start_time_unix_nano=start, time_unix_nano=time, as_int=value, attributes=attrs(route))
        )
    return metric


def histogram(temporality: int, start: int, time: int, buckets: list[int], total: float) -> Metric:
    metric = Metric(name="duration")
    metric.histogram.aggregation_temporality = temporality  # type: ignore[assignment]
    metric.histogram.data_points.append(
        HistogramDataPoint(
            start_time_unix_nano=start,
            time_unix_nano=time,
            count=sum(buckets),
            sum=total,
            bucket_counts=buckets,
            explicit_bounds=[0.1, 1.0],
            min=0.05,
            max=2.0,
        )
    )
    return metric


def points(message: ExportMetricsServiceRequest) -> list[tuple[int, int, int, str]]:
    metric = message.resource_metrics[0].scope_metrics[0].metrics
    if not metric:
        return []
    return [
        (p.start_time_unix_nano, p.time_unix_nano, p.as_int, p.attributes[0].value.string_value)
        for p in metric[0].sum.data_points
    ]


def test_delta_sums_become_running_totals_per_series() -> None:
    converter = TemporalityConverter(Temporality.CUMULATIVE, started_ns=T0)
    first = request(counter(DELTA, [(T0, T0 + S, 3, "/a"), (T0, T0 + S, 10, "/b")]))
    converter.convert(first)
    assert first.resource_metrics[0].scope_metrics[0].metrics[0].sum.aggregation_temporality == CUMULATIVE
    assert points(first) == [(T0, T0 + S, 3, "/a"), (T0, T0 + S, 10, "/b")]
    second = request(counter(DELTA, [(T0 + S, T0 + 2 * S, 4, "/a")]))
    converter.convert(second)
    assert points(second) == [(T0, T0 + 2 * S, 7, "/a")]
    other = request(counter(DELTA, [(T0 + S, T0 + 2 * S, 100, "/a")]), service="other")  # another resource
    converter.convert(other)
    assert points(other) == [(T0 + S, T0 + 2 * S, 100, "/a")]
    # A delta that starts before the total's end: the source restarted; a new total (new start).
    restarted = request(counter(DELTA, [(T0 + S, T0 + 3 * S, 5, "/a")]))
    converter.convert(restarted)
    assert points(restarted) == [(T0 + S, T0 + 3 * S, 5, "/a")] and converter.resets == 1


def test_cumulative_sums_become_differences_and_resets_pass_whole() -> None:
    converter = TemporalityConverter(Temporality.DELTA, started_ns=T0)
    first = request(counter(CUMULATIVE, [(T0 + S, T0 + 2 * S, 5, "/a")]))  # began after the converter
    converter.convert(first)
    assert points(first) == [(T0 + S, T0 + 2 * S, 5, "/a")]
    assert first.resource_metrics[0].scope_metrics[0].metrics[0].sum.aggregation_temporality == DELTA
    second = request(counter(CUMULATIVE, [(T0 + S, T0 + 3 * S, 12, "/a")]))
    converter.convert(second)
    assert points(second) == [(T0 + 2 * S, T0 + 3 * S, 7, "/a")]
    reset = request(counter(CUMULATIVE, [(T0 + 4 * S, T0 + 5 * S, 2, "/a")]))  # new start time
    converter.convert(reset)
    assert points(reset) == [(T0 + 4 * S, T0 + 5 * S, 2, "/a")] and converter.resets == 1
    after = request(counter(CUMULATIVE, [(T0 + 4 * S, T0 + 6 * S, 9, "/a")]))
    converter.convert(after)
    assert points(after) == [(T0 + 5 * S, T0 + 6 * S, 7, "/a")]


def test_a_series_older_than_the_converter_is_baselined_not_sent_whole() -> None:
    converter = TemporalityConverter(Temporality.DELTA, started_ns=T0)
    old = request(counter(CUMULATIVE, [(T0 - 60 * S, T0 + S, 500, "/a")]))
    converter.convert(old)
    assert points(old) == [] and converter.baselined_points == 1
    assert not old.resource_metrics[0].scope_metrics[0].metrics  # an emptied metric is not sent
    nxt = request(counter(CUMULATIVE, [(T0 - 60 * S, T0 + 2 * S, 530, "/a")]))
    converter.convert(nxt)
    assert points(nxt) == [(T0 + S, T0 + 2 * S, 30, "/a")]


def test_up_down_counters_stay_cumulative_under_delta() -> None:
    converter = TemporalityConverter(Temporality.DELTA, started_ns=T0)
    message = request(counter(CUMULATIVE, [(T0 + S, T0 + 2 * S, 5, "/a")], monotonic=False))
    converter.convert(message)
    assert message.resource_metrics[0].scope_metrics[0].metrics[0].sum.aggregation_temporality == CUMULATIVE
    assert points(message) == [(T0 + S, T0 + 2 * S, 5, "/a")] and converter.converted_points == 0


def test_histograms_both_ways() -> None:
    to_cumulative = TemporalityConverter(Temporality.CUMULATIVE, started_ns=T0)
    first = request(histogram(DELTA, T0, T0 + S, [1, 2, 0], 1.5))
    second = request(histogram(DELTA, T0 + S, T0 + 2 * S, [0, 3, 1], 4.0))
    to_cumulative.convert(first)
    to_cumulative.convert(second)
    point = second.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0]
    assert (point.start_time_unix_nano, point.count, point.sum, list(point.bucket_counts)) == (T0, 7, 5.5, [1, 5, 1])
    assert (point.min, point.max) == (0.05, 2.0)

    to_delta = TemporalityConverter(Temporality.DELTA, started_ns=T0)
    first = request(histogram(CUMULATIVE, T0, T0 + S, [1, 2, 0], 1.5))
    second = request(histogram(CUMULATIVE, T0, T0 + 2 * S, [1, 5, 1], 5.5))
    to_delta.convert(first)
    to_delta.convert(second)
    metric = second.resource_metrics[0].scope_metrics[0].metrics[0].histogram
    point = metric.data_points[0]
    assert metric.aggregation_temporality == DELTA
    assert (point.start_time_unix_nano, point.count, point.sum, list(point.bucket_counts)) == (
        T0 + S,
        4,
        4.0,
        [0, 3, 1],
    )
    assert not point.HasField("min") and not point.HasField("max")  # unknown for the interval


def test_keep_changes_nothing_and_the_series_table_is_bounded() -> None:
    keep = TemporalityConverter(Temporality.KEEP, started_ns=T0)
    message = request(counter(DELTA, [(T0, T0 + S, 3, "/a")]))
    keep.convert(message)
    assert points(message) == [(T0, T0 + S, 3, "/a")] and keep.series == 0
    bounded = TemporalityConverter(Temporality.CUMULATIVE, max_series=2, started_ns=T0)
    bounded.convert(request(counter(DELTA, [(T0, T0 + S, 1, route) for route in ("/a", "/b", "/c")])))
    assert bounded.series == 2 and bounded.evicted == 1
