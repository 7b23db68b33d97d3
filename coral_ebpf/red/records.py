"""Requests -> the OTLP records Beyla would send: `http.server.request.duration` histograms and SERVER spans.

Histograms are base-2 exponential (OTLP ExponentialHistogram) at scale `SCALE` = 6, in seconds: the
engine sees every duration exactly, and at scale 6 a bucket spans a factor of 2^(1/64) ≈ 1.0109, so
a percentile interpolated inside its bucket is within 1.1 % of the true value (scale 5 would allow
2.2 %, above the 2 % the query promises), from nanoseconds to hours alike. A point holds at most
`MAX_BUCKETS` buckets (64 per doubling: 2^32 between the fastest and the slowest request) and is
downscaled beyond that. Attributes and resource attributes follow Beyla (notes/beyla-facts.md §3).
Temporality is delta by default (we own the aggregation: each export carries exactly the requests
since the previous one) or cumulative like Beyla.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, ExponentialHistogramDataPoint
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from coral_ebpf import __version__
from coral_ebpf.otlp import wire
from coral_ebpf.storage.exponential import dense, fit, index_of

METRIC_NAME = "http.server.request.duration"
METRIC_DESCRIPTION = "Duration of HTTP service calls from the server side, in seconds"
SCOPE_NAME = "coral-ebpf/red"
SCALE = 6
MAX_BUCKETS = 2048

Attribute = tuple[str, str | int]
SeriesKey = tuple[int, tuple[Attribute, ...]]


def _value(value: str | int) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    return AnyValue(string_value=value)


def key_values(attributes: Iterable[Attribute]) -> list[KeyValue]:
    return [KeyValue(key=key, value=_value(value)) for key, value in attributes]


@dataclass
class Histogram:
    """Durations in seconds, as exponential buckets at `SCALE`: bucket index -> count, and the zero bucket."""

    start_ns: int
    buckets: dict[int, int] = field(default_factory=dict)
    zero_count: int = 0  # durations of 0 (and, were there any, below it)
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def record(self, seconds: float) -> None:
        if seconds > 0:
            index = index_of(seconds, SCALE)
            self.buckets[index] = self.buckets.get(index, 0) + 1
        else:
            self.zero_count += 1
        self.count += 1
        self.total += seconds
        self.low = min(self.low, seconds)
        self.high = max(self.high, seconds)

    def record_ns(self, durations_ns: Sequence[int]) -> None:
        """`record` for many durations in nanoseconds (the engine's per-poll batch)."""
        buckets = self.buckets
        for duration in durations_ns:
            if duration > 0:
                index = index_of(duration / 1e9, SCALE)
                buckets[index] = buckets.get(index, 0) + 1
            else:
                self.zero_count += 1
        self.count += len(durations_ns)
        self.total += sum(durations_ns) / 1e9
        self.low = min(self.low, min(durations_ns) / 1e9)
        self.high = max(self.high, max(durations_ns) / 1e9)

    def copy(self) -> Histogram:
        return Histogram(
            self.start_ns, dict(self.buckets), self.zero_count, self.count, self.total, self.low, self.high
        )

    def merge(self, other: Histogram) -> None:
        self.start_ns = min(self.start_ns, other.start_ns)
        for index, count in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + count
        self.zero_count += other.zero_count
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)


class DurationAggregator:
    """Histograms per (process, attribute set). Not thread-safe: the engine holds its lock."""

    def __init__(self, temporality: str, now_ns: int) -> None:
        self.temporality = temporality
        self._series: dict[SeriesKey, Histogram] = {}
        self._interval_start = now_ns  # delta points cover [previous export, this export]

    def __len__(self) -> int:
        return len(self._series)

    def _histogram(self, tgid: int, attributes: tuple[Attribute, ...], now_ns: int) -> Histogram:
        key = (tgid, attributes)
        histogram = self._series.get(key)
        if histogram is None:
            start = self._interval_start if self.temporality == "delta" else now_ns
            histogram = self._series[key] = Histogram(start_ns=start)
        return histogram

    def record(self, tgid: int, attributes: tuple[Attribute, ...], seconds: float, now_ns: int) -> None:
        self._histogram(tgid, attributes, now_ns).record(seconds)

    def record_ns(self, tgid: int, attributes: tuple[Attribute, ...], durations_ns: Sequence[int], now_ns: int) -> None:
        """Many durations (nanoseconds, at least one) of one series."""
        self._histogram(tgid, attributes, now_ns).record_ns(durations_ns)

    def take(self, now_ns: int) -> dict[SeriesKey, Histogram]:
        """The series to export: delta hands them over and starts afresh; cumulative keeps them."""
        if self.temporality == "delta":
            series, self._series = self._series, {}
            self._interval_start = now_ns
            return series
        return {key: histogram.copy() for key, histogram in self._series.items()}

    def give_back(self, series: Mapping[SeriesKey, Histogram]) -> None:
        """An export that was not accepted: delta folds it into the next one (cumulative needs nothing)."""
        if self.temporality != "delta":
            return
        for key, histogram in series.items():
            current = self._series.get(key)
            if current is None:
                self._series[key] = histogram
            else:
                current.merge(histogram)

    def forget(self, tgid: int) -> None:
        for key in [key for key in self._series if key[0] == tgid]:
            del self._series[key]


def metrics_request(
    series: Mapping[SeriesKey, Histogram],
    resources: Mapping[int, Sequence[Attribute]],
    temporality: str,
    now_ns: int,
) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    by_tgid: dict[int, list[tuple[tuple[Attribute, ...], Histogram]]] = {}
    for (tgid, attributes), histogram in series.items():
        if histogram.count:
            by_tgid.setdefault(tgid, []).append((attributes, histogram))
    otlp_temporality = (
        AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
        if temporality == "delta"
        else AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    )
    for tgid, points in by_tgid.items():
        resource_metrics = request.resource_metrics.add()
        resource_metrics.resource.attributes.extend(key_values(resources.get(tgid, ())))
        scope = resource_metrics.scope_metrics.add()
        scope.scope.name = SCOPE_NAME
        scope.scope.version = __version__
        metric = scope.metrics.add()
        metric.name = METRIC_NAME
        metric.unit = "s"
        metric.description = METRIC_DESCRIPTION
        metric.exponential_histogram.aggregation_temporality = otlp_temporality
        for attributes, histogram in points:
            point: ExponentialHistogramDataPoint = metric.exponential_histogram.data_points.add()
            point.attributes.extend(key_values(attributes))
            point.start_time_unix_nano = histogram.start_ns
            point.time_unix_nano = now_ns
            point.count = histogram.count
            point.sum = histogram.total
            point.min = histogram.low
            point.max = histogram.high
            point.zero_count = histogram.zero_count
            scale, shift = fit(SCALE, histogram.buckets, {}, MAX_BUCKETS)
            buckets = histogram.buckets
            if shift:
                buckets = {}
                for index, count in histogram.buckets.items():
                    buckets[index >> shift] = buckets.get(index >> shift, 0) + count
            point.scale = scale
            point.positive.offset, counts = dense(buckets)
            point.positive.bucket_counts.extend(counts)
    return request


def span_template(name: str, error: bool, attributes: Iterable[Attribute]) -> bytes:
    """The encoded fields a span shares with every span of the same kind of request.

    Spans are many and alike; their ids and times are added per span as raw protobuf fields
    (fields of a message may come in any order), which costs a few microseconds instead of the
    tens it takes to build each span as a message.
    """
    span = Span(name=name, kind=Span.SpanKind.SPAN_KIND_SERVER)
    span.attributes.extend(key_values(attributes))
    if error:
        span.status.code = Status.StatusCode.STATUS_CODE_ERROR
    return span.SerializeToString()


# (tgid, start, end in unix nanoseconds, span_template bytes, trace id): a plain tuple, as one is made
# per request. The trace id is b"" unless sampling already drew it (then the span keeps that one).
SpanRecord = tuple[int, int, int, bytes, bytes]


def traces_request(
    spans: Sequence[SpanRecord], resources: Mapping[int, Sequence[Attribute]]
) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(encoded_traces_request(spans, resources))


def encoded_traces_request(spans: Sequence[SpanRecord], resources: Mapping[int, Sequence[Attribute]]) -> bytes:
    """A serialized ExportTraceServiceRequest of `spans`, each with a random span id and its own or a
    fresh random trace id.

    Each span is its own ids and times (`wire.span_head`) followed by its template: spans of one
    template have the same length, so their `ScopeSpans.spans` prefix is computed once.
    """
    by_tgid: dict[int, list[bytes]] = {}
    ids = random.randbytes(24 * len(spans))
    head = wire.span_head
    prefixes: dict[bytes, bytes] = {}
    for index, (tgid, start_ns, end_ns, template, trace_id) in enumerate(spans):
        prefix = prefixes.get(template)
        if prefix is None:
            prefix = prefixes[template] = wire.spans_entry_prefix(wire.SPAN_HEAD_SIZE + len(template))
        at = index * 24
        span = head(trace_id or ids[at : at + 16], ids[at + 16 : at + 24], start_ns, end_ns)
        by_tgid.setdefault(tgid, []).append(prefix + span + template)
    scope = InstrumentationScope(name=SCOPE_NAME, version=__version__).SerializeToString()
    return wire.encode_traces_request(
        (Resource(attributes=key_values(resources.get(tgid, ()))).SerializeToString(), scope, encoded)
        for tgid, encoded in by_tgid.items()
    )
