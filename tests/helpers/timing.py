"""Wall-clock allowances that stretch on slow machines.

Under QEMU/TCG (`make vm-test`, `make vagrant-test` without KVM) CPU-bound work runs 10-20 times
slower than natively: a Python process needs seconds to import its dependencies, a BCC compile
takes 4-10 s. The VM harnesses export CORAL_TEST_TIME_SCALE (10 under TCG); natively it is unset
and everything here is the identity. Use it for deadlines and for the agent timings a test sets
(grace periods, health intervals, debounce), so that their ratios stay what the test means.

`eventually` is the one way a test waits for a condition: polling with a scaled deadline, never a
bare sleep that hopes the condition is reached by then.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import TypeVar

ENV = "CORAL_TEST_TIME_SCALE"
T = TypeVar("T")
_DURATION = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)$")


def time_scale() -> float:
    """The factor from CORAL_TEST_TIME_SCALE (at least 1; 1 when unset)."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return 1.0
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{ENV}={text!r} is not a number (e.g. 10 under QEMU/TCG, unset natively)") from None
    if value < 1:
        raise ValueError(f"{ENV}={text!r} must be at least 1")
    return value


def scaled(seconds: float) -> float:
    """`seconds` stretched by the time scale."""
    return seconds * time_scale()


def scaled_duration(text: str) -> str:
    """A config duration such as "200ms" or "3s", stretched by the time scale, in the same unit."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 200ms, 3s, 1m)")
    number = float(match["number"]) * time_scale()
    rendered = f"{number:.3f}".rstrip("0").rstrip(".")
    return f"{rendered}{match['unit']}"


def eventually(
    probe: Callable[[], T],
    timeout: float = 10.0,
    what: str | Callable[[], str] = "condition",
    *,
    until: Callable[[T], object] = bool,
    interval: float = 0.05,
) -> T:
    """Call `probe` until `until(value)` holds (by default: until it returns something truthy) and return
    the value; raise AssertionError naming `what` and the last value after `timeout` seconds, stretched
    by the time scale. Exceptions from `probe` propagate: a probe that can fail transiently catches its
    own errors. `what` may be a callable, to describe the state only when the wait fails.
    """
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            shown = repr(value)
            if len(shown) > 2000:
                shown = shown[:2000] + "..."
            raise AssertionError(f"timed out after {limit:g}s waiting for {described}; last value {shown}")
        time.sleep(interval)


def quiet_period(seconds: float) -> None:
    """Let `seconds` (scaled) pass, to show that something does *not* happen (an extra export, a second
    restart). Never a way to wait for something that does: that is `eventually`."""
    time.sleep(scaled(seconds))
