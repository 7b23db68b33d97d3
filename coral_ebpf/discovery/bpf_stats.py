"""Run time of our BPF programs, from the kernel's BPF statistics.

The kernel counts run time and runs per program only while statistics are on. We turn them on
with `bpf(BPF_ENABLE_STATS)`, which returns a file descriptor: statistics stay on while any
such descriptor is open and the kernel turns them off when the last one closes, even if the
agent crashes, so `kernel.bpf_stats_enabled` is never left changed. Kernels before 5.8 lack the
command; there we set the sysctl and put the previous value back on stop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
from pathlib import Path

log = logging.getLogger(__name__)

BPF_OBJ_GET_INFO_BY_FD = 15
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
SYSCTL_PATH = Path("/proc/sys/kernel/bpf_stats_enabled")
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351, "riscv64": 280}
# struct bpf_prog_info (include/uapi/linux/bpf.h): run_time_ns and run_cnt sit at these offsets.
_PROG_INFO_SIZE = 256
_RUN_TIME_NS_OFFSET = 192
_RUN_CNT_OFFSET = 200

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class _EnableStatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


def _bpf(command: int, attr: ctypes.Structure) -> int:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise OSError(0, f"bpf() syscall number unknown for {platform.machine()}")
    result = int(_libc.syscall(number, command, ctypes.byref(attr), ctypes.sizeof(attr)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def prog_run_stats(prog_fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a loaded BPF program."""
    buffer = (ctypes.c_uint8 * _PROG_INFO_SIZE)()
    attr = _InfoAttr(bpf_fd=prog_fd, info_len=_PROG_INFO_SIZE, info=ctypes.addressof(buffer))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    raw = bytes(buffer)
    return (
        int.from_bytes(raw[_RUN_TIME_NS_OFFSET : _RUN_TIME_NS_OFFSET + 8], "little"),
        int.from_bytes(raw[_RUN_CNT_OFFSET : _RUN_CNT_OFFSET + 8], "little"),
    )


class StatsSession:
    """Keeps BPF run-time statistics on between `enable()` and `disable()`."""

    def __init__(self) -> None:
        self.mode = "off"
        self._fd: int | None = None
        self._previous_sysctl: str | None = None

    def enable(self) -> str:
        try:
            self._fd = _bpf(BPF_ENABLE_STATS, _EnableStatsAttr(type=BPF_STATS_RUN_TIME))
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
