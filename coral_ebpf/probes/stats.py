"""The kernel's BPF run-time statistics, kept on while the agent runs.

The kernel counts run time and runs per program only while statistics are on. We turn them on
with `bpf(BPF_ENABLE_STATS)`, which returns a file descriptor: statistics stay on while any
such descriptor is open and the kernel turns them off when the last one closes, even if the
agent crashes, so `kernel.bpf_stats_enabled` is never left changed. Kernels before 5.8 lack the
command; there we set the sysctl and put the previous value back on stop.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from coral_ebpf.probes.linux.bpf import enable_stats

log = logging.getLogger(__name__)

SYSCTL_PATH = Path("/proc/sys/kernel/bpf_stats_enabled")


class StatsSession:
    """Keeps BPF run-time statistics on between `enable()` and `disable()`."""

    def __init__(self) -> None:
        self.mode = "off"
        self._fd: int | None = None
        self._previous_sysctl: str | None = None

    def enable(self) -> str:
        try:
            self._fd = enable_stats()
            self.mode = "bpf_enable_stats"
            return self.mode
        except OSError as exc:
            log.debug("BPF_ENABLE_STATS unavailable", extra={"fields": {"error": str(exc)}})
        try:
            previous = SYSCTL_PATH.read_text().strip()
            if previous != "1":
                SYSCTL_PATH.write_text("1\n")
                self._previous_sysctl = previous
            self.mode = "sysctl"
        except OSError as exc:
            self.mode = f"unavailable ({exc.strerror or exc})"
        return self.mode

    def disable(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._previous_sysctl is not None:
            try:
                SYSCTL_PATH.write_text(self._previous_sysctl + "\n")
            except OSError as exc:
                log.warning(
                    "cannot restore kernel.bpf_stats_enabled",
                    extra={"fields": {"value": self._previous_sysctl, "error": str(exc)}},
                )
            self._previous_sysctl = None
        self.mode = "off"
