"""histogram_quantile against hand-computed values and Prometheus's edge-case semantics."""

from __future__ import annotations

import math

import pytest

from coral_ebpf.query.quantile import histogram_quantile, merge_histograms

BEYLA = [0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]


@pytest.mark.parametrize(("q", "expected"), [(0.25, 1.0), (0.5, 2.0), (0.75, 3.0), (1.0, 4.0)])
def test_interpolation_within_buckets(q: float, expected: float) -> None:
    # cumulative counts 2, 4, 8, 8 at le 1, 2, 4, +Inf
    assert histogram_quantile(q, [1.0, 2.0, 4.0], [2, 2, 4, 0]) == pytest.approx(expected)


def test_prometheus_documented_example() -> None:
    # Cumulative counts 24101 at le=0.5 and 26351 at le=1 of 27892: p90 = 0.5 + 0.5 * 1002.8 / 2250.
    counts = [24101, 26351 - 24101, 27892 - 26351]
    assert histogram_quantile(0.9, [0.5, 1.0], counts) == pytest.approx(0.5 + 0.5 * (0.9 * 27892 - 24101) / 2250)


def test_beyla_buckets() -> None:
    counts = [0] * 16
    counts[3] = 100  # (0.01, 0.025]
    assert histogram_quantile(0.5, BEYLA, counts) == pytest.approx(0.0175)
    assert histogram_quantile(0.99, BEYLA, counts) == pytest.approx(0.01 + 0.015 * 0.99)


def test_rank_in_the_inf_bucket_gives_the_largest_finite_bound() -> None:
    counts = [0] * 15 + [9]
    assert histogram_quantile(0.5, BEYLA, counts) == 10.0
    counts = [0] * 16
    counts[3], counts[15] = 90, 10
    assert histogram_quantile(0.95, BEYLA, counts) == 10.0


def test_lowest_bucket_with_upper_bound_zero_returns_zero() -> None:
    counts = [5] + [0] * 15
    assert histogram_quantile(0.5, BEYLA, counts) == 0.0


def test_lowest_bucket_interpolates_from_zero() -> None:
    assert histogram_quantile(0.5, [2.0, 4.0], [10, 0, 0]) == pytest.approx(1.0)


def test_no_observations_has_no_answer() -> None:
    assert histogram_quantile(0.5, BEYLA, [0] * 16) is None


def test_only_the_inf_bucket_has_no_answer() -> None:
    assert histogram_quantile(0.5, [], [12]) is None


def test_out_of_range_q_follows_prometheus() -> None:
    assert histogram_quantile(-0.1, [1.0], [1, 0]) == -math.inf
    assert histogram_quantile(1.1, [1.0], [1, 0]) == math.inf
    assert histogram_quantile(float("nan"), [1.0], [1, 0]) is None


def test_q_zero_with_an_empty_first_bucket_is_nan_like_prometheus() -> None:
    # rank 0 lands in the first bucket (cumulative 0 >= 0), which is empty: 0/0 in Prometheus.
    assert histogram_quantile(0.0, [1.0, 2.0], [0, 3, 0]) is None
    assert histogram_quantile(0.0, [1.0, 2.0], [2, 3, 0]) == 0.0


def test_wrong_shape_is_an_error() -> None:
    with pytest.raises(ValueError, match="bounds"):
        histogram_quantile(0.5, [1.0, 2.0], [1, 2])


def test_merge_adds_same_layouts_bucket_by_bucket() -> None:
    bounds, counts = merge_histograms([([1.0, 2.0], [1, 2, 3]), ([1.0, 2.0], [4, 5, 6])])
    assert bounds == [1.0, 2.0] and counts == [5, 7, 9]


def test_merge_of_different_layouts_keeps_cumulative_counts_monotonic() -> None:
    bounds, counts = merge_histograms([([1.0, 2.0], [1, 1, 1]), ([1.5], [2, 2])])
    assert bounds == [1.0, 1.5, 2.0]
    assert counts == [1, 2, 1, 3]
    assert sum(counts) == 7


def test_merge_of_nothing_is_empty() -> None:
    bounds, counts = merge_histograms([])
    assert histogram_quantile(0.5, bounds, counts) is None
