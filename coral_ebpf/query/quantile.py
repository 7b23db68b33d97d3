"""Percentiles from bucket counts, as PromQL's `histogram_quantile` computes them.

Given finite upper bounds b[0] < ... < b[n-1] and n+1 counts (the last is the +Inf bucket):
- rank = q * total; the answer lies in the first bucket whose cumulative count >= rank;
- inside a finite bucket, linear interpolation between its lower and upper bound; the lower
  bound of the first bucket is 0, unless its upper bound is <= 0, then that bound is the answer;
- if the rank falls in the +Inf bucket, the answer is the largest finite bound;
- no observations, or no finite bucket at all: no answer (None where Prometheus returns NaN);
- q < 0 gives -inf and q > 1 gives +inf, as in Prometheus.
(Prometheus `BucketQuantile`, promql/quantile.go.)

Where the answer is not a measurement but an edge, `explicit_quantile` says so: a rank in the
+Inf bucket gives the largest finite bound as a *lower* bound ("more than 10s"), and a rank in
the lowest bucket (lower edge 0, or no lower edge at all) gives an interpolation between 0 and
that bucket's upper bound, which the data cannot support, so it is flagged as an *upper*
bound ("5ms or less"). `Distribution` holds explicit and exponential buckets of one group and
answers from the exponential ones exactly where it can (storage/exponential.py).
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from coral_ebpf.storage import exponential
from coral_ebpf.storage.exponential import ExpBuckets


class BoundKind(enum.StrEnum):
    UPPER = "upper"  # the true quantile is at most `Quantile.bound`
    LOWER = "lower"  # the true quantile is more than `Quantile.bound`


@dataclass(frozen=True)
class Quantile:
    value: float | None  # the interpolated value (PromQL's answer)
    bound_kind: BoundKind | None = None  # set when the value is only known to lie beyond `bound`
    bound: float | None = None


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int | float]) -> float | None:
    """The q-quantile of a histogram with finite upper `bounds` and `len(bounds) + 1` `counts`."""
    return explicit_quantile(q, bounds, counts).value


def explicit_quantile(q: float, bounds: Sequence[float], counts: Sequence[int | float]) -> Quantile:
    """`histogram_quantile` with the bound flag (see the module docstring)."""
    if math.isnan(q):
        return Quantile(None)
    if q < 0:
        return Quantile(-math.inf)
    if q > 1:
        return Quantile(math.inf)
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{len(counts)} counts for {len(bounds)} bounds (need bounds + 1, the last being +Inf)")
    if not bounds:
        return Quantile(None)  # only the +Inf bucket: Prometheus needs at least two buckets
    cumulative: list[float] = []
    running = 0.0
    for count in counts:
        running += count
        cumulative.append(running)
    total = cumulative[-1]
    if total <= 0:
        return Quantile(None)
    rank = q * total
    bucket = next((i for i in range(len(bounds)) if cumulative[i] >= rank), len(bounds))
    if bucket == len(bounds):
        return Quantile(bounds[-1], BoundKind.LOWER, bounds[-1])
    if bucket == 0 and bounds[0] <= 0:
        return Quantile(bounds[0], BoundKind.UPPER, bounds[0])
    lower = 0.0 if bucket == 0 else bounds[bucket - 1]
    below = 0.0 if bucket == 0 else cumulative[bucket - 1]
    in_bucket = cumulative[bucket] - below
    # The first bucket whose cumulative count reaches the rank holds an observation unless
    # rank is 0 (q == 0); Prometheus then divides 0 by 0 and answers NaN.
    if in_bucket <= 0:
        return Quantile(None)
    value = lower + (bounds[bucket] - lower) * ((rank - below) / in_bucket)
    if lower <= 0:
        return Quantile(value, BoundKind.UPPER, bounds[bucket])
    return Quantile(value)


Histogram = tuple[Sequence[float], Sequence[int | float]]


def merge_histograms(histograms: Iterable[Histogram]) -> tuple[list[float], list[float]]:
    """Add histograms into one, as `sum by (le)` does before histogram_quantile.

    Histograms with the same bounds add bucket by bucket. When layouts differ, the result has
    the union of all bounds (PromQL: one `le` series per distinct bound), and each histogram
    adds, at every bound, its cumulative count at its own largest bound not above it (never
    more than it observed up to there). PromQL adds nothing for a histogram that lacks an `le`
    and then repairs the non-monotonic cumulative counts that leaves; counting what is known to
    lie below the bound gives the same counts where layouts agree and stays monotonic.
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


@dataclass
class Distribution:
    """The buckets of one group: explicit layouts summed per layout, and exponential points.

    Only exponential data: merged at the smallest scale, exact to the bucket (no bound flag).
    Only explicit data: `merge_histograms`, then `explicit_quantile`. Both: the merged
    exponential point joins the explicit ones as an explicit histogram whose bounds are its
    bucket edges (`exponential.upper_bounds`), so the coarser layout decides the resolution.
    """

    explicit: dict[tuple[float, ...], list[float]] = field(default_factory=dict)
    exponential: list[ExpBuckets] = field(default_factory=list)

    def add_bucket(self, bounds: tuple[float, ...], index: int, count: float) -> None:
        """Add `count` to bucket `index` (0-based, len(bounds) = +Inf) of layout `bounds`."""
        counts = self.explicit.setdefault(bounds, [0.0] * (len(bounds) + 1))
        counts[index] += count

    def add(self, other: Distribution) -> None:
        for bounds, counts in other.explicit.items():
            mine = self.explicit.setdefault(bounds, [0.0] * len(counts))
            for index, count in enumerate(counts):
                mine[index] += count
        self.exponential.extend(other.exponential)

    def compact(self) -> None:
        """Merge the exponential points into one (keeps long windows cheap)."""
        if len(self.exponential) > 1:
            merged = exponential.merge(self.exponential)
            self.exponential = [] if merged is None else [merged]

    def quantile(self, q: float) -> Quantile:
        merged = exponential.merge(self.exponential)
        if merged is not None and not self.explicit:
            return Quantile(exponential.quantile(q, merged))
        histograms: list[Histogram] = list(self.explicit.items())
        if merged is not None:
            histograms.append(exponential.upper_bounds(merged))
        if not histograms:
            return Quantile(None)
        bounds, counts = merge_histograms(histograms)
        return explicit_quantile(q, bounds, counts)
