"""What the operator listener serves, as a small typed interface."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from coral_ebpf.telemetry.exposition import MetricFamily


@dataclass(frozen=True)
class Health:
    """A verdict for `/-/healthy` or `/-/ready`: 200 when `ok`, else 503; `reason` is the body."""

    ok: bool
    reason: str


class TelemetrySource(Protocol):
    def collect(self) -> Sequence[MetricFamily]:
        """Every metric family, as of now. Called on the listener's worker thread, once per scrape."""

    def healthy(self) -> Health:
        """Is the process alive and able to do its work at all?"""

    def ready(self) -> Health:
        """Does it accept data now (receiver listening, storage writing)?"""
