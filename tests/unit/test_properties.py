"""Property tests: cumulative -> delta conversion and quantile monotonicity."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from coral_ebpf.query.quantile import histogram_quantile, merge_histograms
from coral_ebpf.transform.histograms import DeltaTracker, HistogramPoint, Staging

BOUNDS = (0.005, 0.01, 0.1, 1.0)
S = 1_000_000_000

# One step of a series: new observations per bucket, and whether the sender restarted first.
steps = st.lists(
    st.tuples(st.lists(st.integers(0, 50), min_size=5, max_size=5), st.booleans()),
    min_size=1,
    max_size=30,
)


def cumulative_points(plan: list[tuple[list[int], bool]]) -> tuple[list[HistogramPoint], list[int]]:
    """The cumulative points an SDK would export, and the true total per bucket."""
    points, truth = [], [0] * 5
    counts, start = [0] * 5, 0
    for index, (added, restart) in enumerate(plan):
        time = (index + 1) * 10 * S
        if restart and index:
            counts, start = [0] * 5, time - 5 * S
        counts = [c + a for c, a in zip(counts, added, strict=True)]
        truth = [t + a for t, a in zip(truth, added, strict=True)]
        points.append(HistogramPoint(start, time, sum(counts), None, None, None, BOUNDS, tuple(counts)))
    return points, truth


def stored_totals(points: list[HistogramPoint]) -> list[int]:
    tracker = DeltaTracker()
    totals = [0] * 5
    for p in points:
        staging = Staging()
        delta = tracker.cumulative(("series",), p, staging)
        tracker.commit(staging)
        if delta is not None:
            assert delta.count == sum(delta.counts)
            assert all(c >= 0 for c in delta.counts)
            assert delta.start_ns < delta.time_ns or delta.start_ns == p.start_ns
            totals = [t + c for t, c in zip(totals, delta.counts, strict=True)]
    return totals


@given(steps)
@settings(max_examples=300, deadline=None)
def test_in_order_deltas_add_up_to_every_observation(plan: list[tuple[list[int], bool]]) -> None:
    points, truth = cumulative_points(plan)
    assert stored_totals(points) == truth


@given(steps, st.randoms(use_true_random=False))
@settings(max_examples=300, deadline=None)
def test_out_of_order_delivery_never_counts_more_than_happened(
    plan: list[tuple[list[int], bool]], rng: random.Random
) -> None:
    points, truth = cumulative_points(plan)
    shuffled = points[:]
    rng.shuffle(shuffled)
    totals = stored_totals(shuffled)
    assert all(stored <= real for stored, real in zip(totals, truth, strict=True))


@given(steps, st.lists(st.integers(0, 29), max_size=10))
@settings(max_examples=200, deadline=None)
def test_repeated_points_change_nothing(plan: list[tuple[list[int], bool]], repeats: list[int]) -> None:
    points, truth = cumulative_points(plan)
    delivered: list[HistogramPoint] = []
    for index, p in enumerate(points):
        delivered.append(p)
        delivered += [p] * repeats.count(index)  # a retried request right after the original
    assert stored_totals(delivered) == truth


bounds_strategy = st.lists(st.floats(-5, 100, allow_nan=False), min_size=1, max_size=12, unique=True).map(sorted)


@given(bounds_strategy, st.data())
@settings(max_examples=300, deadline=None)
def test_quantile_is_monotonic_in_q_and_within_the_bounds(bounds: list[float], data: st.DataObject) -> None:
    counts = data.draw(st.lists(st.integers(0, 1000), min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    qs = sorted(data.draw(st.lists(st.floats(0.001, 1.0), min_size=2, max_size=6)))
    values = [histogram_quantile(q, bounds, counts) for q in qs]
    if sum(counts) == 0:
        assert all(v is None for v in values)
        return
    present = [v for v in values if v is not None]
    assert present == sorted(present)
    low = min(0.0, bounds[0])
    assert all(low <= v <= bounds[-1] for v in present)


@given(st.lists(st.tuples(bounds_strategy, st.data()), min_size=1, max_size=4))
@settings(max_examples=100, deadline=None)
def test_merging_keeps_every_observation(parts: list[tuple[list[float], st.DataObject]]) -> None:
    histograms = []
    for bounds, data in parts:
        counts = data.draw(st.lists(st.integers(0, 100), min_size=len(bounds) + 1, max_size=len(bounds) + 1))
        histograms.append((bounds, counts))
    merged_bounds, merged_counts = merge_histograms(histograms)
    assert sum(merged_counts) == sum(sum(c) for _, c in histograms)
    assert all(c >= 0 for c in merged_counts)
    assert merged_bounds == sorted(set(merged_bounds))
