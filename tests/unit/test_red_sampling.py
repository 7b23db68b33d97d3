"""`red.sampling`: the TraceIdRatioBased rule, and the settings' checks."""

from __future__ import annotations

import random

import pytest
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

from coral_ebpf.agent.config import parse_config_text
from coral_ebpf.errors import ConfigError
from coral_ebpf.red.cardinality import SegmentCap
from coral_ebpf.red.sampling import SamplingSettings, SpanSampler, ratio_bound, sampled


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 0.999, 1.0])
def test_decision_is_the_otel_sdks_for_the_same_trace_id(ratio: float) -> None:
    otel = TraceIdRatioBased(ratio)
    rng = random.Random(7)
    for _ in range(2000):
        trace_id = rng.randbytes(16)
        expected = otel.should_sample(None, int.from_bytes(trace_id, "big"), "span").decision
        assert sampled(trace_id, ratio_bound(ratio)) == (expected == Decision.RECORD_AND_SAMPLE)


def test_sampler_returns_the_trace_id_it_decided_on() -> None:
    ids = iter([bytes(8) + (0).to_bytes(8, "big"), bytes(8) + (2**64 - 1).to_bytes(8, "big")])
    sampler = SpanSampler(SamplingSettings(ratio=0.5), random_bytes=lambda _: next(ids))
    assert sampler.draw() == bytes(16)  # low half 0: below the bound, kept with this id
    assert sampler.draw() is None
    assert not sampler.keeps_all and sampler.slow_ns == 500_000_000


def test_slow_rule_off_at_zero() -> None:
    assert SpanSampler(SamplingSettings(keep_slower_than=0)).slow_ns > 10**18


def test_settings_from_config() -> None:
    red = parse_config_text(
        "red:\n  sampling:\n    ratio: 0.25\n    keep_slower_than: 2s\n    keep_errors: false\n"
    ).red
    assert red.sampling == SamplingSettings(ratio=0.25, keep_slower_than=2.0, keep_errors=False)
    assert parse_config_text("log_level: info\n").red.sampling == SamplingSettings(1.0, 0.5, True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("red:\n  sampling:\n    ratio: 1.5\n", "ratio"),
        ("red:\n  sampling:\n    ratio: fast\n", "ratio"),
        ("red:\n  sampling:\n    keep_slower_than: soon\n", "keep_slower_than"),
        ("red:\n  sampling:\n    keep: all\n", "keep"),
        ("red:\n  ignored_routes: ['health']\n", "ignored_routes"),
        ("red:\n  ignored_routes: ['/a/{id']\n", "red.ignored_routes"),
        ("red:\n  unmatched_routes: low\n", "unmatched_routes"),
        ("red:\n  max_path_segment_cardinality: 0\n", "max_path_segment_cardinality"),
    ],
)
def test_bad_values_name_their_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config_text(text)


def test_defaults_ignore_health_checks_and_fold_404s() -> None:
    red = parse_config_text("log_level: info\n").red
    assert "/healthz" in red.ignored_routes and "/metrics" in red.ignored_routes
    assert red.unmatched_routes == "low-cardinality" and red.fold_not_found
    assert parse_config_text("red:\n  ignored_routes: []\n").red.ignored_routes == ()


def test_segment_cap_rejects_zero() -> None:
    with pytest.raises(ValueError):
        SegmentCap(0)
