"""Base-2 exponential histogram buckets (OTLP ExponentialHistogram): layout and arithmetic.

At scale `s` the base is b = 2^(2^-s); positive bucket index i covers (b^i, b^(i+1)], negative
bucket index i covers [-b^(i+1), -b^i), and the zero bucket holds every value with
|v| <= zero_threshold (OpenTelemetry data model, "ExponentialHistogram"). Counts are dense from
an offset: counts[k] belongs to index offset + k.

- Downscaling by d merges buckets: index i becomes i >> d (floor division by 2^d), exact.
- Merging points of different scales downscales every point to the smallest scale, then adds
  the counts per index; the zero threshold becomes the largest one, and positive or negative
  buckets lying wholly inside it move to the zero bucket.
- Quantiles follow Prometheus's native-histogram `histogram_quantile`: rank = q * count, found
  walking negative buckets (most negative first), the zero bucket, then positive buckets;
  inside an exponential bucket the answer is interpolated exponentially
  (lower * (upper / lower)^fraction), inside the zero bucket linearly.

Both transform (decoding, cumulative -> delta) and query (merging, quantiles) use this module.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MIN_SCALE = -10
MAX_SCALE = 20
# A stored point holds at most this many buckets per sign (the OTel SDK default is 160).
MAX_BUCKETS = 16_384


@dataclass(frozen=True)
class ExpBuckets:
    """The bucket part of one exponential histogram point."""

    scale: int
    zero_count: int
    zero_threshold: float
    positive_offset: int
    positive: tuple[int, ...]
    negative_offset: int = 0
    negative: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        return self.zero_count + sum(self.positive) + sum(self.negative)


def base(scale: int) -> float:
    return float(2.0 ** (2.0**-scale))


def lower_bound(index: int, scale: int) -> float:
    """b^index: the (exclusive) lower bound of positive bucket `index`; inf when it overflows."""
    try:
        return float(2.0 ** (index * 2.0**-scale))
    except OverflowError:
        return math.inf


def index_of(value: float, scale: int) -> int:
    """The index of the positive bucket holding `value` (> 0): b^i < value <= b^(i+1).

    Exact powers of two are placed by their exponent (the logarithm can be off by one ulp there).
    """
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2^exponent, mantissa in [0.5, 1)
    power_of_two = mantissa == 0.5
    if scale <= 0:
        base2 = exponent - 2 if power_of_two else exponent - 1  # index at scale 0
        return base2 >> -scale
    if power_of_two:
        return ((exponent - 1) << scale) - 1
    return math.ceil(math.log2(value) * (1 << scale)) - 1


def _sparse(offset: int, counts: Sequence[int], shift: int) -> dict[int, int]:
    result: dict[int, int] = {}
    for position, count in enumerate(counts):
        if count:
            index = (offset + position) >> shift
            result[index] = result.get(index, 0) + count
    return result


def dense(sparse: dict[int, int]) -> tuple[int, tuple[int, ...]]:
    """(offset, counts) of a sparse index -> count map (empty: offset 0, no counts)."""
    if not sparse:
        return 0, ()
    low, high = min(sparse), max(sparse)
    return low, tuple(sparse.get(index, 0) for index in range(low, high + 1))


def downscaled(buckets: ExpBuckets, scale: int) -> ExpBuckets:
    """The same point at a scale not above its own (exact: buckets only merge)."""
    shift = buckets.scale - scale
    if shift < 0:
        raise ValueError(f"cannot upscale from {buckets.scale} to {scale}")
    if shift == 0:
        return buckets
    positive_offset, positive = dense(_sparse(buckets.positive_offset, buckets.positive, shift))
    negative_offset, negative = dense(_sparse(buckets.negative_offset, buckets.negative, shift))
    return ExpBuckets(
        scale, buckets.zero_count, buckets.zero_threshold, positive_offset, positive, negative_offset, negative
    )


def fit(scale: int, positive: dict[int, int], negative: dict[int, int], max_buckets: int) -> tuple[int, int]:
    """The largest scale <= `scale` at which both sparse maps span at most `max_buckets` indexes,
    and the shift to get there."""
    shift = 0
    for sparse in (positive, negative):
        if sparse:
            low, high = min(sparse), max(sparse)
            while (high >> shift) - (low >> shift) + 1 > max_buckets:
                shift += 1
    return scale - shift, shift


def merge(points: Iterable[ExpBuckets]) -> ExpBuckets | None:
    """The sum of `points` at their smallest scale (None when there are none)."""
    items = list(points)
    if not items:
        return None
    scale = min(point.scale for point in items)
    threshold = max(point.zero_threshold for point in items)
    zero = 0
    positive: dict[int, int] = {}
    negative: dict[int, int] = {}
    for point in items:
        zero += point.zero_count
        shift = point.scale - scale
        for target, offset, counts in (
            (positive, point.positive_offset, point.positive),
            (negative, point.negative_offset, point.negative),
        ):
            for index, count in _sparse(offset, counts, shift).items():
                target[index] = target.get(index, 0) + count
    if threshold > 0:
        # Buckets wholly inside the widest zero bucket belong to it.
        for sparse in (positive, negative):
            for index in [i for i in sparse if lower_bound(i + 1, scale) <= threshold]:
                zero += sparse.pop(index)
    positive_offset, positive_counts = dense(positive)
    negative_offset, negative_counts = dense(negative)
    return ExpBuckets(scale, zero, threshold, positive_offset, positive_counts, negative_offset, negative_counts)


def subtract(later: ExpBuckets, earlier: ExpBuckets) -> ExpBuckets | None:
    """later - earlier for two cumulative points of one series; None when a count went down (a reset)."""
    if later.zero_threshold != earlier.zero_threshold or later.zero_count < earlier.zero_count:
        return None
    scale = min(later.scale, earlier.scale)
    new, old = downscaled(later, scale), downscaled(earlier, scale)
    differences = []
    for new_offset, new_counts, old_offset, old_counts in (
        (new.positive_offset, new.positive, old.positive_offset, old.positive),
        (new.negative_offset, new.negative, old.negative_offset, old.negative),
    ):
        difference = _sparse(new_offset, new_counts, 0)
        for index, count in _sparse(old_offset, old_counts, 0).items():
            left = difference.get(index, 0) - count
            if left < 0:
                return None
            if left:
                difference[index] = left
            else:
                difference.pop(index, None)
        differences.append(dense(difference))
    (positive_offset, positive), (negative_offset, negative) = differences
    return ExpBuckets(
        scale, new.zero_count - old.zero_count, new.zero_threshold, positive_offset, positive, negative_offset, negative
    )


def rescaled(buckets: ExpBuckets, factor: float) -> ExpBuckets:
    """The point with every value multiplied by `factor` (a unit change, e.g. ms -> s).

    A factor that is not a power of the base cannot keep the buckets: each bucket moves, whole,
    to the bucket at the same scale that holds its (geometric) midpoint times `factor`, so a
    value moves by at most one bucket width.
    """
    if factor == 1.0:
        return buckets
    half = 0.5 * 2.0**-buckets.scale
    moved = []
    for offset, counts in ((buckets.positive_offset, buckets.positive), (buckets.negative_offset, buckets.negative)):
        target: dict[int, int] = {}
        for position, count in enumerate(counts):
            if count:
                midpoint = factor * float(2.0 ** ((offset + position + half) * 2.0**-buckets.scale))
                index = index_of(midpoint, buckets.scale)
                target[index] = target.get(index, 0) + count
        moved.append(dense(target))
    (positive_offset, positive), (negative_offset, negative) = moved
    return ExpBuckets(
        buckets.scale,
        buckets.zero_count,
        buckets.zero_threshold * factor,
        positive_offset,
        positive,
        negative_offset,
        negative,
    )


def quantile(q: float, buckets: ExpBuckets) -> float | None:
    """The q-quantile (Prometheus semantics, see the module docstring); None without observations."""
    if math.isnan(q):
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    total = buckets.count
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    scale = buckets.scale
    for position in range(len(buckets.negative) - 1, -1, -1):
        count = buckets.negative[position]
        if count and seen + count >= rank:
            index = buckets.negative_offset + position
            # From -b^(index+1) towards -b^index.
            upper, lower = lower_bound(index + 1, scale), lower_bound(index, scale)
            return float(-upper * (lower / upper) ** ((rank - seen) / count))
        seen += count
    if buckets.zero_count and seen + buckets.zero_count >= rank:
        threshold = buckets.zero_threshold
        low = -threshold if any(buckets.negative) else 0.0
        return low + (threshold - low) * ((rank - seen) / buckets.zero_count)
    seen += buckets.zero_count
    for position, count in enumerate(buckets.positive):
        if count and seen + count >= rank:
            index = buckets.positive_offset + position
            lower, upper = lower_bound(index, scale), lower_bound(index + 1, scale)
            return float(lower * (upper / lower) ** ((rank - seen) / count))
        seen += count
    # Rounding left the rank above the last bucket: the largest value there is.
    if buckets.positive:
        return lower_bound(buckets.positive_offset + len(buckets.positive), scale)
    return buckets.zero_threshold


def upper_bounds(buckets: ExpBuckets) -> tuple[list[float], list[int]]:
    """The point as an explicit-bucket histogram: finite upper bounds and len(bounds) + 1 counts.

    Used where only explicit buckets fit (merging with explicit data, /metrics). Negative
    buckets, the zero bucket and the positive buckets in order; the +Inf bucket is empty.
    """
    bounds: list[float] = []
    counts: list[int] = []
    scale = buckets.scale
    for position in range(len(buckets.negative) - 1, -1, -1):
        bounds.append(-lower_bound(buckets.negative_offset + position, scale))
        counts.append(buckets.negative[position])
    if buckets.zero_count or not buckets.positive:
        bounds.append(buckets.zero_threshold)
        counts.append(buckets.zero_count)
    if buckets.positive:
        # An empty bucket up to the first one's lower bound, so interpolation starts there.
        bounds.append(lower_bound(buckets.positive_offset, scale))
        counts.append(0)
    for position, count in enumerate(buckets.positive):
        bounds.append(lower_bound(buckets.positive_offset + position + 1, scale))
        counts.append(count)
    # Bounds must increase strictly (a zero threshold may coincide with a bucket bound).
    cleaned_bounds: list[float] = []
    cleaned_counts: list[int] = []
    for bound, count in zip(bounds, counts, strict=True):
        if cleaned_bounds and bound <= cleaned_bounds[-1]:
            cleaned_counts[-1] += count
        else:
            cleaned_bounds.append(bound)
            cleaned_counts.append(count)
    return cleaned_bounds, [*cleaned_counts, 0]


# OpenTelemetry's default duration bounds (seconds), for readers that take explicit buckets only.
DEFAULT_DURATION_BOUNDS = (0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def folded(buckets: ExpBuckets, bounds: tuple[float, ...] = DEFAULT_DURATION_BOUNDS) -> list[int]:
    """The point's counts in explicit `bounds` (+Inf last): each bucket goes whole to the first
    explicit bucket whose bound is at or above its upper edge, so counts stay exact and only
    resolution is lost."""
    counts = [0] * (len(bounds) + 1)
    edges, edge_counts = upper_bounds(buckets)
    for edge, count in zip([*edges, math.inf], edge_counts, strict=True):
        if count:
            counts[bisect.bisect_left(bounds, edge)] += count
    return counts
