"""When to restart Beyla after a failure, and when to give up.

Exponential back-off: `backoff_initial` (1 s) doubling up to `backoff_max` (30 s), as Alloy does.
A failure that retrying cannot fix (kernel too old, no BTF, capabilities, a configuration Beyla
rejects) fails at once. More than `max_restarts` failures in a row (10, Alloy's limit) fails too.
Staying healthy for `healthy_reset` (30 s) starts the count, and so the back-off, over.
"""

from __future__ import annotations

from dataclasses import dataclass

from coral_ebpf.beyla.diagnosis import Diagnosis
from coral_ebpf.beyla.settings import RestartSettings


@dataclass(frozen=True)
class Decision:
    action: str  # "restart" | "fail"
    delay: float = 0.0
    diagnosis: Diagnosis | None = None


class RestartPolicy:
    def __init__(self, settings: RestartSettings) -> None:
        self.settings = settings
        self.consecutive_failures = 0
        self._up_since: float | None = None

    def failed(self, diagnosis: Diagnosis) -> Decision:
        self._up_since = None
        if not diagnosis.retryable:
            return Decision("fail", diagnosis=diagnosis)
        self.consecutive_failures += 1
        if self.consecutive_failures > self.settings.max_restarts:
            gave_up = Diagnosis(
                diagnosis.kind,
                f"gave up after {self.settings.max_restarts} restarts in a row; last: {diagnosis.message}",
                diagnosis.fix,
                False,
                diagnosis.line,
            )
            return Decision("fail", diagnosis=gave_up)
        delay = self.settings.backoff_initial * 2 ** (self.consecutive_failures - 1)
        return Decision("restart", delay=min(delay, self.settings.backoff_max), diagnosis=diagnosis)

    def started(self) -> None:
        self._up_since = None

    def healthy(self, now: float) -> None:
        """Beyla looked healthy at `now` (monotonic); long enough of that resets the failure count."""
        if self._up_since is None:
            self._up_since = now
        elif self.consecutive_failures and now - self._up_since >= self.settings.healthy_reset:
            self.consecutive_failures = 0
