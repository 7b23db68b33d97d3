"""Explicit-bucket histogram points: validation, and cumulative -> delta per series.

A series is (resource, scope, metric name, unit, data-point attribute set). Beyla exports
cumulative histograms whose `start_time` is the exporter's start; each stored row is the
difference between two consecutive cumulative points of a series.

Rules (docs/storage-and-query.md explains why):
- first point of a series: stored whole, as the delta over [start_time, time] — unless the
  database already held rows *of this series* newer than that start_time when the agent
  started (the sender outlived an agent restart, so part of that count is already stored);
  then it is only the baseline. A series the previous run never stored keeps its first
  point whatever else is stored: its start_time tells the truth.
- start_time changed, or the count or any bucket went down: a reset; the point is stored
  whole as a fresh start.
- time not after the last point (out of order, or a retried request): nothing to store; a
  later cumulative point already contains it.
- no new observations: nothing stored (the state still advances).
- delta input is stored as sent; a point identical in (series, start, time) to one of the
  last few of its series is a duplicate (a retry) and is dropped.

Exponential histograms (`read_exponential_point`) follow the same rules; two cumulative points
of different scales are compared and subtracted at the smaller scale (an SDK lowers its scale
as the range of values grows), and a changed zero threshold counts as a reset.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.proto.metrics.v1.metrics_pb2 import ExponentialHistogramDataPoint, HistogramDataPoint

from coral_ebpf.storage import exponential
from coral_ebpf.storage.exponential import ExpBuckets
from coral_ebpf.storage.series import StoredSeries
from coral_ebpf.transform.door import DEFAULT_MAX_AHEAD, TimeWindow, count_reason, float_reason

SeriesKey = tuple[Any, ...]


@dataclass(frozen=True)
class HistogramPoint:
    start_ns: int
    time_ns: int
    count: int
    sum: float | None
    min: float | None
    max: float | None
    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    # An exponential point has its buckets here, and no bounds or counts.
    exponential: ExpBuckets | None = None

    def scaled(self, factor: float) -> HistogramPoint:
        """The same point in another unit (bounds, sum, min and max multiplied by `factor`)."""
        if factor == 1.0:
            return self
        return replace(
            self,
            sum=None if self.sum is None else self.sum * factor,
            min=None if self.min is None else self.min * factor,
            max=None if self.max is None else self.max * factor,
            bounds=tuple(bound * factor for bound in self.bounds),
            exponential=None if self.exponential is None else exponential.rescaled(self.exponential, factor),
        )


def read_point(data_point: HistogramDataPoint, window: TimeWindow | None = None) -> HistogramPoint | str:
    """The point, or why it cannot be used (a reason naming the field; see `transform.door`)."""
    bounds = tuple(data_point.explicit_bounds)
    counts = tuple(data_point.bucket_counts)
    window = window or TimeWindow.now(DEFAULT_MAX_AHEAD)
    time_reason = window.reason("time_unix_nano", data_point.time_unix_nano)
    if time_reason:
        return time_reason
    if data_point.start_time_unix_nano > data_point.time_unix_nano:
        return "start_time_unix_nano is after time_unix_nano"
    too_big = count_reason("count", data_point.count)
    if too_big:
        return too_big
    if counts and len(counts) != len(bounds) + 1:
        return f"{len(counts)} bucket counts for {len(bounds)} bounds (need bounds + 1, the last being +Inf)"
    if not counts and bounds:
        return "explicit_bounds without bucket_counts"
    if any(not math.isfinite(bound) for bound in bounds) or any(b >= a for b, a in itertools.pairwise(bounds)):
        return "explicit_bounds must be finite and strictly increasing"
    if counts and sum(counts) != data_point.count:
        return f"count {data_point.count} differs from the sum of bucket_counts {sum(counts)}"
    summary = _sum_min_max(data_point)
    if isinstance(summary, str):
        return summary
    total, low, high = summary
    return HistogramPoint(
        start_ns=data_point.start_time_unix_nano,
        time_ns=data_point.time_unix_nano,
        count=data_point.count,
        sum=total,
        min=low,
        max=high,
        bounds=bounds,
        counts=counts,
    )


def _sum_min_max(
    data_point: HistogramDataPoint | ExponentialHistogramDataPoint,
) -> tuple[float | None, float | None, float | None] | str:
    """A histogram point's optional sum, min and max, or why one of them cannot be stored."""
    total = data_point.sum if data_point.HasField("sum") else None
    low = data_point.min if data_point.HasField("min") else None
    high = data_point.max if data_point.HasField("max") else None
    return float_reason("sum", total) or float_reason("min", low) or float_reason("max", high) or (total, low, high)


def read_exponential_point(
    data_point: ExponentialHistogramDataPoint, window: TimeWindow | None = None
) -> HistogramPoint | str:
    """The exponential point, or why it cannot be used (a reason naming the field)."""
    window = window or TimeWindow.now(DEFAULT_MAX_AHEAD)
    time_reason = window.reason("time_unix_nano", data_point.time_unix_nano)
    if time_reason:
        return time_reason
    if data_point.start_time_unix_nano > data_point.time_unix_nano:
        return "start_time_unix_nano is after time_unix_nano"
    too_big = count_reason("count", data_point.count) or count_reason("zero_count", data_point.zero_count)
    if too_big:
        return too_big
    if not exponential.MIN_SCALE <= data_point.scale <= exponential.MAX_SCALE:
        return f"scale {data_point.scale} is outside [{exponential.MIN_SCALE}, {exponential.MAX_SCALE}]"
    threshold = data_point.zero_threshold
    if not math.isfinite(threshold) or threshold < 0:
        return f"zero_threshold {threshold} must be finite and >= 0"
    sides = []
    for name, side in (("positive", data_point.positive), ("negative", data_point.negative)):
        counts = tuple(side.bucket_counts)
        if len(counts) > exponential.MAX_BUCKETS:
            return f"{name}: {len(counts)} buckets (at most {exponential.MAX_BUCKETS})"
        if not (side.offset >= -(2**31) and side.offset + len(counts) <= 2**31 - 1):
            return f"{name}.offset {side.offset} is out of range"
        sides.append((side.offset, counts))
    (positive_offset, positive), (negative_offset, negative) = sides
    buckets = ExpBuckets(
        data_point.scale, data_point.zero_count, threshold, positive_offset, positive, negative_offset, negative
    )
    if buckets.count != data_point.count:
        return f"count {data_point.count} differs from zero_count plus the bucket counts ({buckets.count})"
    summary = _sum_min_max(data_point)
    if isinstance(summary, str):
        return summary
    total, low, high = summary
    return HistogramPoint(
        start_ns=data_point.start_time_unix_nano,
        time_ns=data_point.time_unix_nano,
        count=data_point.count,
        sum=total,
        min=low,
        max=high,
        bounds=(),
        counts=(),
        exponential=buckets,
    )


@dataclass(frozen=True)
class _Seen:
    """A series' last cumulative point, or its recent delta identities."""

    last: HistogramPoint | None
    recent: tuple[tuple[int, int], ...] = ()
    touched: float = 0.0


class Staging:
    """Series states changed by one request, applied only if the request is accepted."""

    def __init__(self) -> None:
        self.changes: dict[SeriesKey, _Seen] = {}
        self.outcomes: dict[str, int] = {}

    def note(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class DeltaTracker:
    """Per-series state for turning cumulative histograms into deltas. Not thread-safe: callers lock."""

    RECENT_DELTAS = 8

    def __init__(
        self,
        stored_before: Mapping[StoredSeries, int] | None = None,
        series_ttl: float = 3600.0,
        max_series: int = 200_000,
    ):
        # What the previous run stored: series -> its newest stored time (ns); see the rules above.
        self.stored_before: Mapping[StoredSeries, int] = stored_before or {}
        self.series_ttl = series_ttl
        self.max_series = max_series
        self._series: dict[SeriesKey, _Seen] = {}
        self._last_sweep = time.monotonic()

    def __len__(self) -> int:
        return len(self._series)

    def _lookup(self, key: SeriesKey, staging: Staging) -> _Seen | None:
        seen = staging.changes.get(key)
        return seen if seen is not None else self._series.get(key)

    def cumulative(
        self,
        key: SeriesKey,
        point: HistogramPoint,
        staging: Staging,
        stored_as: Callable[[], StoredSeries] | None = None,
    ) -> HistogramPoint | None:
        """The delta to store for cumulative `point`, or None.

        `stored_as` gives the series' database identity; it is called only for a series' first
        point, and only when the previous run stored anything.
        """
        now = time.monotonic()
        seen = self._lookup(key, staging)
        previous = seen.last if seen is not None else None
        if previous is None:
            staging.changes[key] = _Seen(point, touched=now)
            stored_until = self.stored_before.get(stored_as()) if self.stored_before and stored_as else None
            if stored_until is not None and point.start_ns < stored_until:
                staging.note("first_point_baseline")
                return None
            staging.note("first_point_stored")
            return point if point.count else None
        if point.time_ns <= previous.time_ns:
            staging.note("out_of_order")
            return None
        staging.changes[key] = _Seen(point, touched=now)
        if point.start_ns != previous.start_ns:
            staging.note("reset")
            return point if point.count else None
        exponential_difference = _exponential_difference(previous, point)
        if (
            point.count < previous.count
            or point.bounds != previous.bounds
            or any(new < old for new, old in zip(point.counts, previous.counts, strict=False))
            or ((point.exponential is not None or previous.exponential is not None) and exponential_difference is None)
        ):
            staging.note("reset")
            return replace(point, start_ns=previous.time_ns) if point.count else None
        if point.count == previous.count:
            staging.note("unchanged")
            return None
        return replace(_difference(previous, point), exponential=exponential_difference)

    def delta(self, key: SeriesKey, point: HistogramPoint, staging: Staging) -> HistogramPoint | None:
        """`point` itself, unless it repeats one of the series' recent points (a retry)."""
        identity = (point.start_ns, point.time_ns)
        seen = self._lookup(key, staging)
        recent = seen.recent if seen is not None else ()
        if identity in recent:
            staging.note("duplicate_delta")
            return None
        staging.changes[key] = _Seen(None, (*recent, identity)[-self.RECENT_DELTAS :], time.monotonic())
        return point if point.count else None

    def commit(self, staging: Staging) -> None:
        self._series.update(staging.changes)
        now = time.monotonic()
        if now - self._last_sweep > 60 or len(self._series) > self.max_series:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        expired = [key for key, seen in self._series.items() if now - seen.touched > self.series_ttl]
        for key in expired:
            del self._series[key]
        overflow = len(self._series) - self.max_series
        if overflow > 0:
            oldest = sorted(self._series, key=lambda k: self._series[k].touched)[:overflow]
            for key in oldest:
                del self._series[key]


def _exponential_difference(previous: HistogramPoint, point: HistogramPoint) -> ExpBuckets | None:
    """point - previous for two exponential points; None when either is not one, or on a reset."""
    if point.exponential is None or previous.exponential is None:
        return None
    return exponential.subtract(point.exponential, previous.exponential)


def _difference(previous: HistogramPoint, point: HistogramPoint) -> HistogramPoint:
    # A cumulative min/max covers the whole run; it tells something about this interval only
    # when it moved (then the new extreme happened inside the interval).
    new_max = point.max if point.max is not None and (previous.max is None or point.max > previous.max) else None
    new_min = point.min if point.min is not None and (previous.min is None or point.min < previous.min) else None
    total = None if point.sum is None or previous.sum is None else point.sum - previous.sum
    return HistogramPoint(
        start_ns=previous.time_ns,
        time_ns=point.time_ns,
        count=point.count - previous.count,
        sum=total,
        min=new_min,
        max=new_max,
        bounds=point.bounds,
        counts=tuple(new - old for new, old in zip(point.counts, previous.counts, strict=True)),
    )
