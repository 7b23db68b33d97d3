"""Histogram points: validation (all buckets, +Inf), and cumulative -> delta per series."""

from __future__ import annotations

from opentelemetry.proto.metrics.v1.metrics_pb2 import HistogramDataPoint

from coral_ebpf.storage.series import StoredSeries
from coral_ebpf.transform.histograms import DeltaTracker, HistogramPoint, Staging, read_point

BOUNDS = (0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
S = 1_000_000_000


def point(start: int, time: int, counts: list[int], total: float | None = None, **extra: float) -> HistogramPoint:
    padded = tuple(counts + [0] * (len(BOUNDS) + 1 - len(counts)))
    return HistogramPoint(start, time, sum(padded), total, extra.get("min"), extra.get("max"), BOUNDS, padded)


def convert(tracker: DeltaTracker, key: tuple[str, ...], p: HistogramPoint) -> tuple[HistogramPoint | None, Staging]:
    staging = Staging()
    result = tracker.cumulative(key, p, staging)
    tracker.commit(staging)
    return result, staging


def test_read_point_keeps_every_bucket_including_inf() -> None:
    counts = [0] * 15 + [7]
    dp = HistogramDataPoint(
        start_time_unix_nano=1, time_unix_nano=2, count=7, sum=140.0, bucket_counts=counts, explicit_bounds=BOUNDS
    )
    parsed = read_point(dp)
    assert isinstance(parsed, HistogramPoint)
    assert parsed.counts[-1] == 7 and len(parsed.counts) == len(parsed.bounds) + 1
    assert parsed.sum == 140.0 and parsed.min is None and parsed.max is None


def test_read_point_rejects_inconsistent_points() -> None:
    assert "bucket counts" in str(
        read_point(HistogramDataPoint(time_unix_nano=2, count=1, bucket_counts=[1], explicit_bounds=[1.0, 2.0]))
    )
    assert "sum of bucket_counts" in str(
        read_point(HistogramDataPoint(time_unix_nano=2, count=5, bucket_counts=[1, 1], explicit_bounds=[1.0]))
    )
    assert "increasing" in str(
        read_point(HistogramDataPoint(time_unix_nano=2, count=0, bucket_counts=[0, 0, 0], explicit_bounds=[2.0, 1.0]))
    )
    assert "time_unix_nano" in str(read_point(HistogramDataPoint(count=0)))
    assert "finite" in str(
        read_point(HistogramDataPoint(time_unix_nano=2, count=0, bucket_counts=[0, 0], explicit_bounds=[float("inf")]))
    )


def test_first_point_is_stored_whole_from_its_start_time() -> None:
    tracker = DeltaTracker()
    stored, staging = convert(tracker, ("a",), point(100 * S, 160 * S, [0, 3, 2], 0.02))
    assert stored is not None and stored.start_ns == 100 * S and stored.count == 5
    assert staging.outcomes == {"first_point_stored": 1}


STORED_A = StoredSeries(1, "m", "s", None)


def test_first_point_older_than_stored_data_is_only_a_baseline() -> None:
    tracker = DeltaTracker(stored_before={STORED_A: 150 * S})
    staging = Staging()
    stored = tracker.cumulative(("a",), point(100 * S, 160 * S, [0, 3]), staging, lambda: STORED_A)
    tracker.commit(staging)
    assert stored is None and staging.outcomes == {"first_point_baseline": 1}
    stored, _ = convert(tracker, ("a",), point(100 * S, 170 * S, [0, 4, 1]))
    assert stored is not None and stored.count == 2 and stored.counts[:3] == (0, 1, 1)


def test_a_series_the_previous_run_never_stored_keeps_its_first_point() -> None:
    tracker = DeltaTracker(stored_before={STORED_A: 150 * S})
    staging = Staging()
    other = StoredSeries(1, "m", "s", '{"route":"/new"}')
    stored = tracker.cumulative(("b",), point(100 * S, 160 * S, [0, 3]), staging, lambda: other)
    assert stored is not None and stored.count == 3 and stored.start_ns == 100 * S
    assert staging.outcomes == {"first_point_stored": 1}


def test_a_series_started_after_its_last_stored_row_keeps_its_first_point() -> None:
    tracker = DeltaTracker(stored_before={STORED_A: 150 * S})
    staging = Staging()
    stored = tracker.cumulative(("a",), point(155 * S, 160 * S, [0, 3]), staging, lambda: STORED_A)
    assert stored is not None and stored.count == 3  # a restarted sender: nothing of it was stored


def test_consecutive_points_become_differences() -> None:
    tracker = DeltaTracker()
    convert(tracker, ("a",), point(0, 10 * S, [1, 2, 3], 1.0, min=0.001, max=0.02))
    stored, _ = convert(
        tracker, ("a",), point(0, 20 * S, [1, 5, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 31.0, min=0.001, max=12.0)
    )
    assert stored is not None
    assert (stored.start_ns, stored.time_ns) == (10 * S, 20 * S)
    assert stored.count == 5
    assert stored.counts == (0, 3) + (0,) * 13 + (2,)
    assert stored.sum == 30.0
    assert stored.max == 12.0  # the cumulative max moved, so it happened in this interval
    assert stored.min is None  # the cumulative min did not move: unknown for this interval


def test_series_are_independent() -> None:
    tracker = DeltaTracker()
    convert(tracker, ("a",), point(0, 10 * S, [1]))
    stored, _ = convert(tracker, ("b",), point(0, 20 * S, [4]))
    assert stored is not None and stored.count == 4


def test_reset_by_new_start_time_stores_the_point_whole() -> None:
    tracker = DeltaTracker()
    convert(tracker, ("a",), point(0, 10 * S, [10]))
    stored, staging = convert(tracker, ("a",), point(15 * S, 20 * S, [3]))
    assert stored is not None and stored.count == 3 and stored.start_ns == 15 * S
    assert staging.outcomes == {"reset": 1}


def test_reset_by_decreasing_count_stores_the_point_whole() -> None:
    tracker = DeltaTracker()
    convert(tracker, ("a",), point(0, 10 * S, [10]))
    stored, staging = convert(tracker, ("a",), point(0, 20 * S, [2]))
    assert stored is not None and stored.count == 2 and stored.start_ns == 10 * S
    assert staging.outcomes == {"reset": 1}


def test_reset_by_a_decreasing_bucket_even_if_count_grows() -> None:
    tracker = DeltaTracker()
    convert(tracker, ("a",), point(0, 10 * S, [5, 5]))
    stored, staging = convert(tracker, ("a",), point(0, 20 * S, [4, 9]))
    assert stored is not None and stored.count == 13
    assert staging.outcomes == {"reset": 1}


def test_out_of_order_and_repeated_points_store_nothing() -> None:
    tracker = DeltaTracker()
    convert(tracker, ("a",), point(0, 10 * S, [1]))
    convert(tracker, ("a",), point(0, 30 * S, [5]))
    late, staging = convert(tracker, ("a",), point(0, 20 * S, [3]))
    assert late is None and staging.outcomes == {"out_of_order": 1}
    again, staging = convert(tracker, ("a",), point(0, 30 * S, [5]))
    assert again is None and staging.outcomes == {"out_of_order": 1}
    nxt, _ = convert(tracker, ("a",), point(0, 40 * S, [6]))
    assert nxt is not None and nxt.count == 1


def test_unchanged_point_stores_nothing_but_advances() -> None:
    tracker = DeltaTracker()
    convert(tracker, ("a",), point(0, 10 * S, [1]))
    same, staging = convert(tracker, ("a",), point(0, 20 * S, [1]))
    assert same is None and staging.outcomes == {"unchanged": 1}


def test_uncommitted_staging_leaves_state_untouched() -> None:
    tracker = DeltaTracker()
    convert(tracker, ("a",), point(0, 10 * S, [1]))
    refused = Staging()
    assert tracker.cumulative(("a",), point(0, 20 * S, [4]), refused) is not None
    # Not committed (the write queue refused the request): the retry sees the same difference.
    retried, _ = convert(tracker, ("a",), point(0, 20 * S, [4]))
    assert retried is not None and retried.count == 3


def test_two_points_of_one_series_in_one_request() -> None:
    tracker = DeltaTracker()
    staging = Staging()
    first = tracker.cumulative(("a",), point(0, 10 * S, [2]), staging)
    second = tracker.cumulative(("a",), point(0, 20 * S, [5]), staging)
    assert first is not None and second is not None
    assert (first.count, second.count) == (2, 3)


def test_delta_points_are_kept_and_retries_dropped() -> None:
    tracker = DeltaTracker()
    staging = Staging()
    p = point(10 * S, 20 * S, [3])
    assert tracker.delta(("a",), p, staging) == p
    tracker.commit(staging)
    staging = Staging()
    assert tracker.delta(("a",), p, staging) is None
    assert staging.outcomes == {"duplicate_delta": 1}
    # An earlier interval arriving late is real data, not a duplicate.
    earlier = point(0, 10 * S, [1])
    assert tracker.delta(("a",), earlier, staging) == earlier


def test_stale_series_are_forgotten() -> None:
    tracker = DeltaTracker(series_ttl=0.0)
    convert(tracker, ("a",), point(0, 10 * S, [1]))
    tracker._sweep(float("inf"))
    assert len(tracker) == 0
