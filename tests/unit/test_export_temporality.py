"""Temporality conversion of exported metrics: known points in, known points out, per series."""

from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
)

from coral_ebpf.export.exponential import ExponentialBuckets
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


def exponential(temporality: int, start: int, time: int, *, scale: int, offset: int, counts: list[int]) -> Metric:
    metric = Metric(name="latency")
    metric.exponential_histogram.aggregation_temporality = temporality  # type: ignore[assignment]
    point = ExponentialHistogramDataPoint(
        start_time_unix_nano=start, time_unix_nano=time, scale=scale, count=sum(counts) + 1, zero_count=1
    )
    point.positive.offset = offset
    point.positive.bucket_counts.extend(counts)
    metric.exponential_histogram.data_points.append(point)
    return metric


def exponential_point(message: ExportMetricsServiceRequest) -> tuple[int, int, int, dict[int, int], int]:
    point = message.resource_metrics[0].scope_metrics[0].metrics[0].exponential_histogram.data_points[0]
    buckets = ExponentialBuckets.of(point)
    return point.start_time_unix_nano, point.scale, point.count, dict(buckets.positive), point.zero_count


def test_exponential_buckets_downscale_by_merging_neighbours() -> None:
    buckets = ExponentialBuckets(2, 0, {3: 1, 4: 2, 7: 1, -1: 1})
    assert buckets.downscaled(0).positive == {0: 1, 1: 3, -1: 1}
    assert buckets.plus(ExponentialBuckets(1, 2, {2: 5})).positive == {1: 1, 2: 7, 3: 1, -1: 1}
    assert ExponentialBuckets(1, 0, {2: 1}).minus(ExponentialBuckets(1, 0, {2: 2})) is None  # went down


def test_exponential_histograms_both_ways_across_a_scale_change() -> None:
    # Scale 3 buckets 8 and 9 merge into bucket 4 at scale 2.
    to_cumulative = TemporalityConverter(Temporality.CUMULATIVE, started_ns=T0)
    first = request(exponential(DELTA, T0, T0 + S, scale=3, offset=8, counts=[1, 2]))
    second = request(exponential(DELTA, T0 + S, T0 + 2 * S, scale=2, offset=4, counts=[3, 1]))
    to_cumulative.convert(first)
    to_cumulative.convert(second)
    assert exponential_point(first) == (T0, 3, 4, {8: 1, 9: 2}, 1)
    assert exponential_point(second) == (T0, 2, 9, {4: 6, 5: 1}, 2)

    to_delta = TemporalityConverter(Temporality.DELTA, started_ns=T0)
    first = request(exponential(CUMULATIVE, T0, T0 + S, scale=3, offset=8, counts=[1, 2]))
    second = request(exponential(CUMULATIVE, T0, T0 + 2 * S, scale=2, offset=4, counts=[5, 1]))
    to_delta.convert(first)
    to_delta.convert(second)
    assert exponential_point(second) == (T0 + S, 2, 3, {4: 2, 5: 1}, 0)
    higher = request(exponential(CUMULATIVE, T0, T0 + 3 * S, scale=3, offset=8, counts=[9, 9]))  # scale went up
    to_delta.convert(higher)
    assert exponential_point(higher) == (T0, 3, 19, {8: 9, 9: 9}, 1) and to_delta.resets == 1
