"""Converting exported metrics between cumulative and delta aggregation temporality.

`export.otlp.temporality` decides what the upstream gets: `keep` (as received), `cumulative` or
`delta`. Sums, explicit-bucket and exponential histograms are converted (exponential buckets are
added and subtracted at the smaller of the two scales); gauges and summaries pass as they are.
With `delta`, non-monotonic sums (up-down counters) stay cumulative, as the OpenTelemetry SDKs do
for a delta preference.

State is kept per series (resource, scope, metric name, point attributes), in the order the
exporter sends, which is arrival order:

- delta -> cumulative: a running total per series, reported from the first delta's start time.
  A start time earlier than the running total's end, or explicit bucket bounds that change, start
  a new total (a reset the upstream sees as a new start time).
- cumulative -> delta: the difference to the series' previous point, over (previous time, time].
  A new start time, a value that went down, explicit bucket bounds that change or an exponential
  scale that went up mean the source reset:
  the point is sent as it is (it already covers start..time). The first point of a series whose
  start time lies before this converter began is only remembered (`baselined`): part of it may
  have been exported by a previous run, so sending it whole could count that part twice.

The state lives in memory, bounded by `max_series` (least recently used series are forgotten,
counted in `evicted`); an agent restart starts it afresh, with the rules above.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    NumberDataPoint,
)

from coral_ebpf.export.exponential import ExponentialBuckets

CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


class Temporality(enum.Enum):
    KEEP = "keep"
    CUMULATIVE = "cumulative"
    DELTA = "delta"


# OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE values. The SDKs' `lowmemory` asks for delta
# from synchronous counters and histograms only; received data does not say which instrument made
# it, so it is treated as `delta` (up-down counters stay cumulative either way).
ENV_PREFERENCES = {"cumulative": Temporality.CUMULATIVE, "delta": Temporality.DELTA, "lowmemory": Temporality.DELTA}


@dataclass
class _Series:
    start: int  # start_time_unix_nano of what was sent (cumulative) or of the source's series (delta)
    time: int  # time_unix_nano of the last point seen
    value: float = 0.0  # number points: running total / last cumulative value
    count: int = 0
    total: float = 0.0  # histogram sum
    buckets: list[int] = field(default_factory=list)
    bounds: tuple[float, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exponential: ExponentialBuckets | None = None

    def add_histogram_delta(self, point: HistogramDataPoint | ExponentialHistogramDataPoint) -> None:
        """Add a delta histogram point's count, sum and extrema to the running totals (buckets are the caller's)."""
        self.count += point.count
        self.total += point.sum
        if point.HasField("min"):
            self.minimum = point.min if self.minimum is None else min(self.minimum, point.min)
        if point.HasField("max"):
            self.maximum = point.max if self.maximum is None else max(self.maximum, point.max)
        self.time = point.time_unix_nano


def _attributes_key(attributes: Iterable[KeyValue]) -> bytes:
    return b"\0".join(sorted(kv.SerializeToString(deterministic=True) for kv in attributes))


class TemporalityConverter:
    def __init__(self, target: Temporality, *, max_series: int = 100_000, started_ns: int | None = None) -> None:
        self.target = target
        self.max_series = max_series
        self.started_ns = time.time_ns() if started_ns is None else started_ns
        self._series: OrderedDict[bytes, _Series] = OrderedDict()
        self.converted_points = 0
        self.baselined_points = 0
        self.resets = 0
        self.evicted = 0

    @property
    def series(self) -> int:
        return len(self._series)

    def convert(self, request: ExportMetricsServiceRequest) -> None:
        """Rewrite `request` in place to the target temporality (dropping baselined points)."""
        if self.target is Temporality.KEEP:
            return
        for resource_metrics in request.resource_metrics:
            resource_key = _attributes_key(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                scope = scope_metrics.scope
                scope_key = b"\0".join((resource_key, scope.name.encode(), scope.version.encode()))
                kept = []
                for metric in scope_metrics.metrics:
                    self._convert_metric(scope_key + b"\1" + metric.name.encode(), metric)
                    kind = metric.WhichOneof("data")
                    if kind is None or getattr(metric, kind).data_points:
                        kept.append(metric)
                if len(kept) != len(scope_metrics.metrics):
                    copies = [type(metric)() for metric in kept]
                    for copy, metric in zip(copies, kept, strict=True):
                        copy.CopyFrom(metric)
                    del scope_metrics.metrics[:]
                    scope_metrics.metrics.extend(copies)

    def _convert_metric(self, metric_key: bytes, metric: Any) -> None:
        kind = metric.WhichOneof("data")
        step: Callable[..., bool]
        if kind == "sum":
            data = metric.sum
            if self.target is Temporality.DELTA and not data.is_monotonic:
                wanted = CUMULATIVE
            else:
                wanted = CUMULATIVE if self.target is Temporality.CUMULATIVE else DELTA
            step = self._sum_point
        elif kind == "histogram":
            data = metric.histogram
            wanted = CUMULATIVE if self.target is Temporality.CUMULATIVE else DELTA
            step = self._histogram_point
        elif kind == "exponential_histogram":
            data = metric.exponential_histogram
            wanted = CUMULATIVE if self.target is Temporality.CUMULATIVE else DELTA
            step = self._exponential_point
        else:
            return
        source = data.aggregation_temporality
        if source == wanted or source not in (CUMULATIVE, DELTA):
            return
        kept = []
        for point in data.data_points:
            key = metric_key + b"\2" + _attributes_key(point.attributes)
            if step(key, point, to_cumulative=wanted == CUMULATIVE):
                kept.append(point)
                self.converted_points += 1
        if len(kept) != len(data.data_points):
            copies = [type(point)() for point in kept]
            for copy, point in zip(copies, kept, strict=True):
                copy.CopyFrom(point)
            del data.data_points[:]
            data.data_points.extend(copies)
        data.aggregation_temporality = wanted

    def _remember(self, key: bytes, series: _Series) -> None:
        self._series[key] = series
        self._series.move_to_end(key)
        while len(self._series) > self.max_series:
            self._series.popitem(last=False)
            self.evicted += 1

    # -- number points (sums) --------------------------------------------------------------------

    def _sum_point(self, key: bytes, point: NumberDataPoint, *, to_cumulative: bool) -> bool:
        is_int = point.WhichOneof("value") == "as_int"
        value: float = point.as_int if is_int else point.as_double  # ints stay exact
        previous = self._series.get(key)
        if to_cumulative:
            if previous is None or point.start_time_unix_nano < previous.time:
                if previous is not None:
                    self.resets += 1
                previous = _Series(start=point.start_time_unix_nano, time=point.time_unix_nano)
            previous.value += value
            previous.time = point.time_unix_nano
            self._remember(key, previous)
            point.start_time_unix_nano = previous.start
            _set_number(point, previous.value, is_int)
            return True
        current = _Series(start=point.start_time_unix_nano, time=point.time_unix_nano, value=value)
        self._remember(key, current)
        if previous is None:
            return self._first_cumulative(point.start_time_unix_nano)
        if point.start_time_unix_nano != previous.start or value < previous.value:
            self.resets += 1
            return True  # a reset: the point covers start..time as it is
        point.start_time_unix_nano = previous.time
        _set_number(point, value - previous.value, is_int)
        return True

    def _first_cumulative(self, start_ns: int) -> bool:
        if start_ns and start_ns >= self.started_ns:
            return True  # the series began while this converter ran: nothing of it was sent before
        self.baselined_points += 1
        return False

    # -- explicit-bucket histograms ----------------------------------------------------------------

    def _histogram_point(self, key: bytes, point: HistogramDataPoint, *, to_cumulative: bool) -> bool:
        bounds = tuple(point.explicit_bounds)
        buckets = list(point.bucket_counts)
        if len(buckets) != len(bounds) + 1:
            return True  # malformed (the upstream will say so): passed on as it is, not converted
        previous = self._series.get(key)
        if to_cumulative:
            if previous is None or point.start_time_unix_nano < previous.time or previous.bounds != bounds:
                if previous is not None:
                    self.resets += 1
                previous = _Series(
                    start=point.start_time_unix_nano,
                    time=point.time_unix_nano,
                    bounds=bounds,
                    buckets=[0] * len(buckets),
                )
            previous.buckets = [a + b for a, b in zip(previous.buckets, buckets, strict=True)]
            previous.add_histogram_delta(point)
            self._remember(key, previous)
            point.start_time_unix_nano = previous.start
            point.count, point.sum = previous.count, previous.total
            point.bucket_counts[:] = previous.buckets
            _set_extrema(point, previous.minimum, previous.maximum)
            return True
        current = _Series(
            start=point.start_time_unix_nano,
            time=point.time_unix_nano,
            count=point.count,
            total=point.sum,
            buckets=buckets,
            bounds=bounds,
        )
        self._remember(key, current)
        if previous is None:
            return self._first_cumulative(point.start_time_unix_nano)
        went_down = point.count < previous.count or any(b < a for a, b in zip(previous.buckets, buckets, strict=True))
        if point.start_time_unix_nano != previous.start or previous.bounds != bounds or went_down:
            self.resets += 1
            return True
        point.start_time_unix_nano = previous.time
        point.count -= previous.count
        point.sum -= previous.total
        point.bucket_counts[:] = [b - a for a, b in zip(previous.buckets, buckets, strict=True)]
        _set_extrema(point, None, None)  # the interval's min and max are unknown
        return True

    # -- exponential histograms ---------------------------------------------------------------------

    def _exponential_point(self, key: bytes, point: ExponentialHistogramDataPoint, *, to_cumulative: bool) -> bool:
        buckets = ExponentialBuckets.of(point)
        previous = self._series.get(key)
        if to_cumulative:
            if previous is None or previous.exponential is None or point.start_time_unix_nano < previous.time:
                if previous is not None:
                    self.resets += 1
                previous = _Series(
                    start=point.start_time_unix_nano,
                    time=point.time_unix_nano,
                    exponential=ExponentialBuckets(point.scale),
                )
            totals = previous.exponential if previous.exponential is not None else ExponentialBuckets(point.scale)
            previous.exponential = totals.plus(buckets)
            previous.add_histogram_delta(point)
            self._remember(key, previous)
            point.start_time_unix_nano = previous.start
            point.count, point.sum = previous.count, previous.total
            previous.exponential.write(point)
            _set_extrema(point, previous.minimum, previous.maximum)
            return True
        current = _Series(
            start=point.start_time_unix_nano,
            time=point.time_unix_nano,
            count=point.count,
            total=point.sum,
            exponential=buckets,
        )
        self._remember(key, current)
        if previous is None or previous.exponential is None:
            return self._first_cumulative(point.start_time_unix_nano)
        difference = buckets.minus(previous.exponential)
        if point.start_time_unix_nano != previous.start or point.count < previous.count or difference is None:
            self.resets += 1
            return True
        point.start_time_unix_nano = previous.time
        point.count -= previous.count
        point.sum -= previous.total
        difference.write(point)
        _set_extrema(point, None, None)
        return True

    def status(self) -> dict[str, Any]:
        return {
            "temporality": self.target.value,
            "temporality_series": len(self._series),
            "temporality_converted_points": self.converted_points,
            "temporality_baselined_points": self.baselined_points,
            "temporality_resets": self.resets,
            "temporality_evicted_series": self.evicted,
        }


def _set_number(point: NumberDataPoint, value: float, is_int: bool) -> None:
    if is_int:
        point.as_int = int(value)  # an int already: sums and differences of ints
    else:
        point.as_double = value


def _set_extrema(
    point: HistogramDataPoint | ExponentialHistogramDataPoint, minimum: float | None, maximum: float | None
) -> None:
    if minimum is None:
        point.ClearField("min")
    else:
        point.min = minimum
    if maximum is None:
        point.ClearField("max")
    else:
        point.max = maximum
