"""tests/helpers/timing.py: the time scale VM harnesses export for slow (TCG) guests."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.helpers.timing import ENV, eventually, scaled, scaled_duration, time_scale


def test_unset_means_native_speed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert time_scale() == 1.0
    assert scaled(2.5) == 2.5
    assert scaled_duration("200ms") == "200ms"


def test_scale_stretches_seconds_and_durations_in_their_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "10")
    assert scaled(3) == 30
    assert scaled_duration("200ms") == "2000ms"
    assert scaled_duration("1.5s") == "15s"
    monkeypatch.setenv(ENV, "2.5")
    assert scaled_duration("3s") == "7.5s"


@pytest.mark.parametrize("value", ["fast", "0.5", "-1"])
def test_bad_scale_is_rejected_with_the_variable_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ENV, value)
    with pytest.raises(ValueError, match=ENV):
        time_scale()


def test_bad_duration_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        scaled_duration("3 seconds")


def test_eventually_returns_the_first_value_that_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    values: Iterator[object] = iter([0, None, [], 7, 8])
    assert eventually(lambda: next(values), interval=0) == 7
    numbers = iter(range(100))
    assert eventually(lambda: next(numbers), until=lambda n: n >= 3, interval=0) == 3


def test_eventually_fails_naming_what_and_the_last_value_after_the_scaled_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV, "2")
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0.1s waiting for the door; last value 'shut'"):
        eventually(lambda: "shut", 0.05, until=lambda v: v == "open", what=lambda: "the door", interval=0.01)
    assert time.monotonic() - started >= 0.1


def test_eventually_lets_probe_errors_through() -> None:
    def probe() -> bool:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        eventually(probe, interval=0)
