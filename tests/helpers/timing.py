"""Wall-clock allowances that stretch on slow machines.

Under QEMU/TCG (`make vm-test`, `make vagrant-test` without KVM) CPU-bound work runs 10-20 times
slower than natively: a Python process needs seconds to import its dependencies, a BCC compile
takes 4-10 s. The VM harnesses export CORAL_TEST_TIME_SCALE (10 under TCG); natively it is unset
and everything here is the identity. Use it for deadlines and for the agent timings a test sets
(grace periods, health intervals, debounce), so that their ratios stay what the test means.
"""

from __future__ import annotations

import os
import re

ENV = "CORAL_TEST_TIME_SCALE"
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
