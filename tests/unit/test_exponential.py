"""Exponential histogram arithmetic (storage/exponential.py) and the quantile flags, on hand-computed cases."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from coral_ebpf.query.dispatch import run_query
from coral_ebpf.query.quantile import BoundKind, Distribution, Quantile, explicit_quantile
from coral_ebpf.storage import exponential
from coral_ebpf.storage.exponential import ExpBuckets
from tests.helpers.beyla_otlp import (
    DELTA,
    SECOND_NS,
    beyla_resource,
    http_server_attributes,
    key_values,
    metrics_request,
)
from tests.helpers.datapath import data_path


@pytest.mark.parametrize(
    ("value", "scale", "index"),
    [
        (1.0, 0, -1),  # (0.5, 1]: bounds are inclusive above
        (1.5, 0, 0),  # (1, 2]
        (2.0, 0, 0),
        (3.0, 0, 1),  # (2, 4]
        (1.5, 1, 1),  # base sqrt(2): (1.414, 2]
        (2.0, 1, 1),
        (1.2, 1, 0),  # (1, 1.414]
        (4.0, -1, 0),  # base 4: (1, 4]
        (5.0, -1, 1),  # (4, 16]
        (0.25, 0, -3),  # (0.125, 0.25]
    ],
)
def test_index_of(value: float, scale: int, index: int) -> None:
    assert exponential.index_of(value, scale) == index


def test_index_of_agrees_with_the_bounds_at_many_scales() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        scale = rng.randint(-4, 12)
        value = math.exp(rng.uniform(-20, 20))
        index = exponential.index_of(value, scale)
        assert exponential.lower_bound(index, scale) < value * (1 + 1e-12)
        assert value <= exponential.lower_bound(index + 1, scale) * (1 + 1e-12)


def test_quantile_interpolates_exponentially_inside_a_bucket() -> None:
    # Scale 0: (1, 2] holds 2, (2, 4] holds 2.
    buckets = ExpBuckets(scale=0, zero_count=0, zero_threshold=0.0, positive_offset=0, positive=(2, 2))
    assert exponential.quantile(0.5, buckets) == pytest.approx(2.0)
    assert exponential.quantile(0.75, buckets) == pytest.approx(2.0 * math.sqrt(2.0))  # halfway, geometrically
    assert exponential.quantile(1.0, buckets) == pytest.approx(4.0)
    assert exponential.quantile(0.25, buckets) == pytest.approx(math.sqrt(2.0))
    assert exponential.quantile(1.5, buckets) == math.inf
    assert exponential.quantile(-0.1, buckets) == -math.inf


def test_quantile_walks_negative_then_zero_then_positive_buckets() -> None:
    # [-2, -1): 2, zero bucket [-0.5, 0.5]: 2, (1, 2]: 4; 8 in all.
    buckets = ExpBuckets(0, 2, 0.5, 0, (4,), 0, (2,))
    assert exponential.quantile(0.125, buckets) == pytest.approx(-2.0 * 0.5**0.5)  # halfway through [-2, -1)
    assert exponential.quantile(0.375, buckets) == pytest.approx(0.0)  # halfway through [-0.5, 0.5]
    assert exponential.quantile(0.75, buckets) == pytest.approx(math.sqrt(2.0))
    # Without negative buckets the zero bucket is [0, threshold].
    only_zero = ExpBuckets(0, 4, 0.5, 0, ())
    assert exponential.quantile(0.5, only_zero) == pytest.approx(0.25)
    assert exponential.quantile(0.5, ExpBuckets(0, 0, 0.0, 0, ())) is None


def test_merge_downscales_to_the_smallest_scale() -> None:
    fine = ExpBuckets(
        scale=1, zero_count=1, zero_threshold=0.0, positive_offset=2, positive=(1, 3)
    )  # (2, 2.83], (2.83, 4]
    coarse = ExpBuckets(scale=0, zero_count=0, zero_threshold=0.0, positive_offset=1, positive=(5, 1))  # (2, 4], (4, 8]
    merged = exponential.merge([fine, coarse])
    assert merged == ExpBuckets(0, 1, 0.0, 1, (9, 1), 0, ())
    assert merged.count == fine.count + coarse.count
    # Negative offsets floor: index -1 at scale 1 is index -1 at scale 0.
    assert exponential.downscaled(ExpBuckets(1, 0, 0.0, -3, (1, 1, 1)), 0) == ExpBuckets(0, 0, 0.0, -2, (1, 2), 0, ())


def test_merge_moves_buckets_inside_the_widest_zero_threshold_to_zero() -> None:
    tight = ExpBuckets(0, 1, 0.0, -2, (1, 1, 1))  # (0.25, 0.5], (0.5, 1], (1, 2]
    wide = ExpBuckets(0, 2, 1.0, 0, (1,))
    merged = exponential.merge([tight, wide])
    assert merged == ExpBuckets(0, 5, 1.0, 0, (2,), 0, ())


def test_subtract_across_a_scale_change_and_detects_a_reset() -> None:
    earlier = ExpBuckets(scale=2, zero_count=1, zero_threshold=0.0, positive_offset=4, positive=(1, 1))
    later = ExpBuckets(scale=1, zero_count=1, zero_threshold=0.0, positive_offset=2, positive=(3, 0, 4))
    difference = exponential.subtract(later, earlier)
    # earlier at scale 1: indexes 4 and 5 -> 2 (count 2); later minus that: {2: 1, 4: 4}.
    assert difference == ExpBuckets(1, 0, 0.0, 2, (1, 0, 4), 0, ())
    assert exponential.subtract(earlier, later) is None
    assert exponential.subtract(ExpBuckets(1, 0, 0.5, 2, (3,)), ExpBuckets(1, 0, 0.0, 2, (1,))) is None


def test_rescaling_moves_each_bucket_by_its_midpoint() -> None:
    ms = ExpBuckets(
        scale=3, zero_count=2, zero_threshold=0.001, positive_offset=exponential.index_of(5.0, 3), positive=(7,)
    )
    seconds = exponential.rescaled(ms, 0.001)
    assert seconds.zero_count == 2 and seconds.zero_threshold == pytest.approx(1e-6)
    assert seconds.positive == (7,)
    assert exponential.quantile(0.9, seconds) == pytest.approx(0.005, rel=exponential.base(3) - 1)


def test_upper_bounds_keeps_counts_and_edges() -> None:
    bounds, counts = exponential.upper_bounds(ExpBuckets(0, 1, 0.0, 1, (2, 3)))
    assert bounds == [0.0, 2.0, 4.0, 8.0] and counts == [1, 0, 2, 3, 0]


def test_exponential_quantiles_stay_within_the_bucket_error() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(-7, 1.5) for _ in range(20_000)]  # around 1 ms, from µs to 100 ms
    scale = 6
    sparse: dict[int, int] = {}
    for value in values:
        index = exponential.index_of(value, scale)
        sparse[index] = sparse.get(index, 0) + 1
    offset, counts = exponential.dense(sparse)
    buckets = ExpBuckets(scale, 0, 0.0, offset, counts)
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.99):
        truth = ordered[math.ceil(q * len(ordered)) - 1]
        assert exponential.quantile(q, buckets) == pytest.approx(truth, rel=exponential.base(scale) - 1)


# --- explicit buckets: the bound flag -------------------------------------------------------


def test_a_quantile_in_the_lowest_bucket_is_an_upper_bound() -> None:
    result = explicit_quantile(0.5, [0.005, 0.01], [10, 0, 0])
    assert result == Quantile(0.0025, BoundKind.UPPER, 0.005)
    # Beyla's layout starts with a 0 bound: (0, 0.005] is the lowest real bucket.
    assert explicit_quantile(0.5, [0.0, 0.005, 0.01], [0, 10, 0, 0]) == Quantile(0.0025, BoundKind.UPPER, 0.005)


def test_a_quantile_in_the_inf_bucket_is_a_lower_bound() -> None:
    assert explicit_quantile(0.99, [0.005, 10.0], [1, 1, 98]) == Quantile(10.0, BoundKind.LOWER, 10.0)


def test_a_quantile_between_finite_bounds_has_no_flag() -> None:
    assert explicit_quantile(0.5, [0.005, 0.01], [0, 10, 0]) == Quantile(0.0075)


def test_distribution_prefers_exponential_buckets_and_mixes_with_explicit() -> None:
    only_exponential = Distribution(exponential=[ExpBuckets(0, 0, 0.0, 0, (2, 2)), ExpBuckets(1, 0, 0.0, 0, (4,))])
    # (1, 1.414] holds 4 at scale 1 -> (1, 2] at scale 0: 6 in (1, 2], 2 in (2, 4].
    result = only_exponential.quantile(0.5)
    assert result.value == pytest.approx(2 ** (4 / 6)) and result.bound_kind is None
    mixed = Distribution()
    mixed.add_bucket((1.0, 4.0), 1, 4.0)  # 4 in (1, 4]
    mixed.exponential.append(ExpBuckets(0, 0, 0.0, 0, (4,)))  # 4 in (1, 2]
    result = mixed.quantile(0.5)
    # At 2: the explicit histogram has nothing known below it (its bound 1 holds 0), the exponential 4 of 8.
    assert result.value == pytest.approx(2.0) and result.bound_kind is None


# --- through the data path: stored exponential rows, summary and timeline -------------------


def test_summary_and_timeline_read_exponential_rows(tmp_path: Path) -> None:
    now = time.time_ns()
    resource = beyla_resource("expo")
    attributes = key_values(http_server_attributes(resource, "GET", "/fast", 200))
    metric = Metric(name="http.server.request.duration", unit="s")
    metric.exponential_histogram.aggregation_temporality = DELTA
    # Two delta points: 10 requests in (2^-12, 2^-11.5] s at scale 1 (~0.24-0.35 ms), then 10 at scale 3 near 1 ms.
    for age_s, scale, index in ((90, 1, -24), (30, 3, -80)):
        point = metric.exponential_histogram.data_points.add(
            start_time_unix_nano=now - (age_s + 30) * SECOND_NS,
            time_unix_nano=now - age_s * SECOND_NS,
            count=10,
            scale=scale,
            sum=0.01,
        )
        point.attributes.extend(attributes)
        point.positive.offset = index
        point.positive.bucket_counts.append(10)
    with data_path(tmp_path / "state") as (storage, processor):
        assert processor.consume_metrics(metrics_request(resource, [metric])).rejected == 0
        assert storage.flush()
        with storage.reader() as reader:
            summary = run_query(reader, "http", {"since": "5m"})
            timeline = run_query(reader, "http", {"since": "4m", "by": "1m"})
    (row,) = summary["rows"]
    assert row["requests"] == 20 and row["p50_bound"] is None and row["p99_bound"] is None
    # Merged at scale 1: the first 10 in index -24 (2^-12, 2^-11.5], the next 10 in -20 (2^-10, 2^-9.5].
    assert row["p50_ms"] == pytest.approx(2**-11.5 * 1000)
    assert row["p99_ms"] == pytest.approx(2 ** (-10 + 0.5 * 0.98) * 1000)
    filled = [bucket for bucket in timeline["buckets"] if bucket["requests"]]
    assert [bucket["requests"] for bucket in filled] == [10, 10]
    assert filled[0]["p50_ms"] == pytest.approx(2 ** (-12 + 0.25) * 1000)  # halfway through at scale 1
    assert filled[1]["p50_ms"] == pytest.approx(2 ** ((-80 + 0.5) / 8) * 1000)  # scale 3 on its own


def test_rows_of_one_scale_are_summed_per_bucket_index(tmp_path: Path) -> None:
    now = time.time_ns()
    resource = beyla_resource("sums")
    attributes = key_values(http_server_attributes(resource, "GET", "/x", 200))
    metric = Metric(name="http.server.request.duration", unit="s")
    metric.exponential_histogram.aggregation_temporality = DELTA
    # Scale 2, three rows with their own offsets: index -40 gets 1, index -39 gets 2 + 5 + 3 = 10.
    for age_s, offset, counts in ((50, -40, [1, 2]), (40, -39, [5]), (30, -41, [0, 0, 3])):
        point = metric.exponential_histogram.data_points.add(
            start_time_unix_nano=now - (age_s + 10) * SECOND_NS,
            time_unix_nano=now - age_s * SECOND_NS,
            count=sum(counts),
            scale=2,
        )
        point.attributes.extend(attributes)
        point.positive.offset = offset
        point.positive.bucket_counts.extend(counts)
    with data_path(tmp_path / "state") as (storage, processor):
        assert processor.consume_metrics(metrics_request(resource, [metric])).rejected == 0
        assert storage.flush()
        with storage.reader() as reader:
            (row,) = run_query(reader, "http", {"since": "5m"})["rows"]
    assert row["requests"] == 11
    # Rank 5.5: past the 1 in index -40, 4.5 of the 10 in index -39.
    assert row["p50_ms"] == pytest.approx(2 ** ((-39 + 0.45) / 4) * 1000)
