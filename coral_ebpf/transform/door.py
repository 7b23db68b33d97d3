"""Limits every accepted value must respect, so that storage and queries cannot overflow on it.

Checked at the door (while a request is flattened); an item that breaks one is rejected on its
own with a reason naming the field (OTLP partial success) and its valid siblings are stored:

- times: after 1970-01-01 (0 means "missing") and at most `max_ahead` seconds after the agent's
  clock (`otlp.max_time_ahead`, default 1 day). A time of 2^63 ns or more cannot be stored at
  all (Arrow's nanosecond timestamps are signed 64-bit; DuckDB stores 2^63-1 as `infinity`, which
  retention and window queries cannot handle), so the ceiling never exceeds `LATEST_STORABLE_NS`
  whatever the setting.
- counts: below 2^63, so a count fits a signed 64-bit integer in every consumer (DuckDB sums
  UBIGINT into HUGEINT; Go/Java readers use int64).
- floating values (sum, min, max): finite, also after conversion to seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

# 2262-01-01T00:00:00Z: a little before the end of signed 64-bit nanoseconds (2262-04-11).
LATEST_STORABLE_NS = 9_214_646_400 * 1_000_000_000
MAX_COUNT = 2**63 - 1
DEFAULT_MAX_AHEAD = 86400.0


@dataclass(frozen=True)
class TimeWindow:
    """The accepted range of times for one request: (0, ceiling_ns]."""

    ceiling_ns: int
    max_ahead: float

    @classmethod
    def now(cls, max_ahead: float, clock: Callable[[], float] = time.time) -> TimeWindow:
        ceiling = int((clock() + max_ahead) * 1e9) if math.isfinite(max_ahead) else LATEST_STORABLE_NS
        return cls(min(ceiling, LATEST_STORABLE_NS), max_ahead)

    def reason(self, field_name: str, value_ns: int) -> str | None:
        """Why `value_ns` (field `field_name`) cannot be accepted, or None."""
        if value_ns == 0:
            return f"{field_name} is missing"
        if value_ns > self.ceiling_ns:
            return self.too_late(field_name)
        return None

    def too_late(self, field_name: str) -> str:
        if self.ceiling_ns >= LATEST_STORABLE_NS:
            return f"{field_name} is after 2262-01-01, the latest time that can be stored"
        return f"{field_name} is more than {self.max_ahead:g} s ahead of the agent's clock (limit: otlp.max_time_ahead)"


def count_reason(field_name: str, value: int) -> str | None:
    if value > MAX_COUNT:
        return f"{field_name} is 2^63 or more (cannot be stored or summed)"
    return None


def float_reason(field_name: str, value: float | None) -> str | None:
    if value is not None and not math.isfinite(value):
        return f"{field_name} is not finite"
    return None
