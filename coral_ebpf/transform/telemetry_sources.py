"""Who is sending: per `telemetry.sdk.name`, when data last arrived and how much was accepted.

The Beyla supervisor uses "OTLP data from Beyla is arriving" as a health signal (sdk name
`beyla`; the built-in engine sends `coral-ebpf`). Arrival counts even when the write queue
refuses the request: the sender is alive and talking to us.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

UNNAMED = "unknown"


class SourceTracker:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sources: dict[str, dict[str, Any]] = {}

    def _entry(self, sdk: str) -> dict[str, Any]:
        name = sdk or UNNAMED
        entry = self._sources.get(name)
        if entry is None:
            entry = {"last_seen": None, "requests": 0, "spans": 0, "metric_points": 0, "log_records": 0}
            self._sources[name] = entry
        return entry

    def arrived(self, per_sdk: Mapping[str, int], kind: str) -> None:
        now = self._clock()
        with self._lock:
            for sdk, count in per_sdk.items():
                if count:
                    entry = self._entry(sdk)
                    entry["last_seen"] = now
                    entry["requests"] += 1

    def accepted(self, per_sdk: Mapping[str, int], kind: str) -> None:
        with self._lock:
            for sdk, count in per_sdk.items():
                if count:
                    self._entry(sdk)[kind] += count

    def last_seen(self, sdk: str) -> float | None:
        with self._lock:
            entry = self._sources.get(sdk or UNNAMED)
            return None if entry is None else entry["last_seen"]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: dict(entry) for name, entry in self._sources.items()}
