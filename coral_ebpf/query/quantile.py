"""Percentiles from bucket counts, as PromQL's `histogram_quantile` computes them.

Given finite upper bounds b[0] < ... < b[n-1] and n+1 counts (the last is the +Inf bucket):
- rank = q * total; the answer lies in the first bucket whose cumulative count >= rank;
- inside a finite bucket, linear interpolation between its lower and upper bound; the lower
  bound of the first bucket is 0, unless its upper bound is <= 0, then that bound is the answer;
- if the rank falls in the +Inf bucket, the answer is the largest finite bound;
- no observations, or no finite bucket at all: no answer (None where Prometheus returns NaN);
- q < 0 gives -inf and q > 1 gives +inf, as in Prometheus.
(Prometheus `BucketQuantile`, promql/quantile.go.)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int | float]) -> float | None:
    """The q-quantile of a histogram with finite upper `bounds` and `len(bounds) + 1` `counts`."""
    if math.isnan(q):
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{len(counts)} counts for {len(bounds)} bounds (need bounds + 1, the last being +Inf)")
    if not bounds:
        return None  # only the +Inf bucket: Prometheus needs at least two buckets
    cumulative: list[float] = []
    running = 0.0
    for count in counts:
        running += count
        cumulative.append(running)
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    bucket = next((i for i in range(len(bounds)) if cumulative[i] >= rank), len(bounds))
    if bucket == len(bounds):
        return bounds[-1]
    if bucket == 0 and bounds[0] <= 0:
        return bounds[0]
    lower = 0.0 if bucket == 0 else bounds[bucket - 1]
    below = 0.0 if bucket == 0 else cumulative[bucket - 1]
    in_bucket = cumulative[bucket] - below
    # The first bucket whose cumulative count reaches the rank holds an observation unless
    # rank is 0 (q == 0); Prometheus then divides 0 by 0 and answers NaN.
    if in_bucket <= 0:
        return None
    return lower + (bounds[bucket] - lower) * ((rank - below) / in_bucket)


Histogram = tuple[Sequence[float], Sequence[int | float]]


def merge_histograms(histograms: Iterable[Histogram]) -> tuple[list[float], list[float]]:
    """Add histograms into one, as `sum by (le)` does before histogram_quantile.

    Histograms with the same bounds add bucket by bucket. When layouts differ, the result has
    the union of all bounds, and each histogram adds, at every bound, its cumulative count at
    its own largest bound not above it (never more than it observed up to there), so the
    merged cumulative counts stay monotonic.
    """
    layouts: dict[tuple[float, ...], list[float]] = {}
    for bounds, counts in histograms:
        key = tuple(bounds)
        if len(counts) != len(key) + 1:
            raise ValueError(f"{len(counts)} counts for {len(key)} bounds")
        summed = layouts.setdefault(key, [0.0] * len(counts))
        for index, count in enumerate(counts):
            summed[index] += count
    if not layouts:
        return [], [0.0]
    if len(layouts) == 1:
        ((bounds_key, summed),) = layouts.items()
        return list(bounds_key), summed
    union = sorted({bound for key in layouts for bound in key})
    merged_cumulative = [0.0] * (len(union) + 1)
    for key, summed in layouts.items():
        cumulative = []
        running = 0.0
        for count in summed:
            running += count
            cumulative.append(running)
        own = 0
        for index, bound in enumerate(union):
            while own < len(key) and key[own] <= bound:
                own += 1
            merged_cumulative[index] += cumulative[own - 1] if own else 0.0
        merged_cumulative[-1] += cumulative[-1]
    counts = [merged_cumulative[0]] + [b - a for a, b in itertools.pairwise(merged_cumulative)]
    return union, counts
