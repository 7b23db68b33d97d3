"""`red.sampling`: which SERVER spans of the built-in engine are kept.

Every error (5xx, or no response) and every request slower than `keep_slower_than` keeps its
span; the others are kept at `ratio`, decided by the span's trace id the way OpenTelemetry's
`TraceIdRatioBased` sampler does (the low 64 bits of the id, read as an unsigned integer, below
`ratio * 2**64`), so a trace is kept or dropped as a whole by every sampler that follows the rule.
Metrics are never sampled: every request is counted in the histograms whatever happens to its span.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coral_ebpf.config.formats import BOOL, DURATION, section
from coral_ebpf.errors import ConfigError
from coral_ebpf.units import parse_duration

TRACE_ID_BYTES = 16
_ID_SPACE = 1 << 64

SCHEMA = section(
    {
        "ratio": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "Share of the other spans kept (by trace id, like OTel's TraceIdRatioBased); 1 keeps all",
        },
        "keep_slower_than": {
            **DURATION,
            "description": "Spans at least this long are always kept (0 turns the rule off)",
        },
        "keep_errors": {**BOOL, "description": "Always keep the spans of errors (5xx, no response)"},
    },
    "Span sampling of the built-in engine (metrics always count every request)",
)


@dataclass(frozen=True)
class SamplingSettings:
    ratio: float = 1.0
    keep_slower_than: float = 0.5
    keep_errors: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamplingSettings:
        defaults = cls()
        settings = cls(
            ratio=float(data.get("ratio", defaults.ratio)),
            keep_slower_than=parse_duration(data.get("keep_slower_than", defaults.keep_slower_than)),
            keep_errors=bool(data.get("keep_errors", defaults.keep_errors)),
        )
        if not 0.0 <= settings.ratio <= 1.0:
            raise ConfigError(f"red.sampling.ratio: {settings.ratio} is not between 0 and 1", "e.g. 0.1 keeps 10 %")
        if settings.keep_slower_than < 0:
            raise ConfigError(
                f"red.sampling.keep_slower_than: {settings.keep_slower_than}s is negative", "use 0 or e.g. 500ms"
            )
        return settings


class SpanSampler:
    """The decision for one span that is neither an error nor slow: a trace id, or None (sampled away)."""

    def __init__(self, settings: SamplingSettings, random_bytes: Callable[[int], bytes] = random.randbytes) -> None:
        self.keeps_all = settings.ratio >= 1.0
        self.keep_errors = settings.keep_errors
        # A duration in ns at or above which the span is kept; past any real duration when off.
        self.slow_ns = int(settings.keep_slower_than * 1e9) if settings.keep_slower_than > 0 else 1 << 63
        self._bound = ratio_bound(settings.ratio)
        self._random_bytes = random_bytes

    def draw(self) -> bytes | None:
        trace_id = self._random_bytes(TRACE_ID_BYTES)
        return trace_id if sampled(trace_id, self._bound) else None


def sampled(trace_id: bytes, bound: int) -> bool:
    """TraceIdRatioBased's rule: the trace id's low 64 bits below `bound` (= ratio * 2**64)."""
    return int.from_bytes(trace_id[8:16], "big") < bound


def ratio_bound(ratio: float) -> int:
    return round(ratio * _ID_SPACE)
