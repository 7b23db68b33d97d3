"""Bucket arithmetic for OTLP exponential histograms: downscale, add, subtract.

A bucket index i at scale s covers (base^i, base^(i+1)] with base = 2^(2^-s); lowering the scale
by k merges 2^k neighbouring buckets, index i becoming i >> k (an arithmetic shift, right for
negative indexes too). Two histograms are added or subtracted at the smaller of their scales.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExponentialBuckets:
    scale: int
    zero_count: int = 0
    positive: Mapping[int, int] = field(default_factory=dict)  # bucket index -> count (no zeros)
    negative: Mapping[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, point: Any) -> ExponentialBuckets:
        """The buckets of an `ExponentialHistogramDataPoint`."""
        return cls(point.scale, point.zero_count, _sparse(point.positive), _sparse(point.negative))

    def downscaled(self, scale: int) -> ExponentialBuckets:
        shift = self.scale - scale
        if shift <= 0:
            return self
        return ExponentialBuckets(scale, self.zero_count, _shift(self.positive, shift), _shift(self.negative, shift))

    def plus(self, other: ExponentialBuckets) -> ExponentialBuckets:
        scale = min(self.scale, other.scale)
        a, b = self.downscaled(scale), other.downscaled(scale)
        return ExponentialBuckets(
            scale, a.zero_count + b.zero_count, _combine(a.positive, b.positive, 1), _combine(a.negative, b.negative, 1)
        )

    def minus(self, earlier: ExponentialBuckets) -> ExponentialBuckets | None:
        """`self - earlier` at self's scale; None when `earlier` cannot be inside `self` (a reset)."""
        if earlier.scale < self.scale:
            return None  # a cumulative series only ever lowers its scale
        before = earlier.downscaled(self.scale)
        positive = _combine(self.positive, before.positive, -1)
        negative = _combine(self.negative, before.negative, -1)
        zero = self.zero_count - before.zero_count
        if zero < 0 or any(count < 0 for count in (*positive.values(), *negative.values())):
            return None
        return ExponentialBuckets(self.scale, zero, positive, negative)

    def write(self, point: Any) -> None:
        """Set `point`'s scale, zero count and dense bucket ranges to these buckets."""
        point.scale = self.scale
        point.zero_count = self.zero_count
        _write_dense(point.positive, self.positive)
        _write_dense(point.negative, self.negative)


def _sparse(buckets: Any) -> dict[int, int]:
    return {buckets.offset + index: count for index, count in enumerate(buckets.bucket_counts) if count}


def _shift(buckets: Mapping[int, int], shift: int) -> dict[int, int]:
    merged: dict[int, int] = {}
    for index, count in buckets.items():
        merged[index >> shift] = merged.get(index >> shift, 0) + count
    return merged


def _combine(a: Mapping[int, int], b: Mapping[int, int], sign: int) -> dict[int, int]:
    result = dict(a)
    for index, count in b.items():
        result[index] = result.get(index, 0) + sign * count
    return {index: count for index, count in result.items() if count}


def _write_dense(target: Any, buckets: Mapping[int, int]) -> None:
    if not buckets:
        target.offset = 0
        del target.bucket_counts[:]
        return
    low, high = min(buckets), max(buckets)
    target.offset = low
    target.bucket_counts[:] = [buckets.get(index, 0) for index in range(low, high + 1)]
