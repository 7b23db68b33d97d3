"""Request counters per transport and signal, shared by the worker threads, read by `status()`."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Requests that match no signal (unknown path, wrong method) are counted under this key.
OTHER = "other"


@dataclass
class _SignalCounters:
    requests: int = 0
    items_accepted: int = 0  # acknowledged to the client: the consumer has them
    items_rejected: int = 0  # refused for good by the consumer, reported as partial success
    items_refused: int = 0  # in requests answered 429/503: the client still holds them and retries
    bytes_in: int = 0  # request bodies as received (compressed, when they were)
    errors: Counter[str] = field(default_factory=Counter)  # by HTTP status or gRPC code name
    last_request_unix: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "items_accepted": self.items_accepted,
            "items_rejected": self.items_rejected,
            "items_refused": self.items_refused,
            "bytes_in": self.bytes_in,
            "errors": dict(sorted(self.errors.items())),
            "last_request_unix": self.last_request_unix,
        }


class ReceiverStats:
    def __init__(self, transports: tuple[str, ...], signals: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        self._counters = {t: {s: _SignalCounters() for s in (*signals, OTHER)} for t in transports}

    def record(
        self,
        transport: str,
        signal: str,
        *,
        bytes_in: int = 0,
        accepted: int = 0,
        rejected: int = 0,
        refused: int = 0,
        error: str | None = None,
    ) -> None:
        now = time.time()
        with self._lock:
            counters = self._counters[transport][signal]
            counters.requests += 1
            counters.bytes_in += bytes_in
            counters.items_accepted += accepted
            counters.items_rejected += rejected
            counters.items_refused += refused
            if error is not None:
                counters.errors[error] += 1
            counters.last_request_unix = now

    def snapshot(self, transport: str) -> dict[str, Any]:
        with self._lock:
            return {signal: counters.as_dict() for signal, counters in self._counters[transport].items()}
