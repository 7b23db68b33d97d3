"""perf_event_open(2), and attaching a BPF program to the perf event it opens.

Struct layout follows include/uapi/linux/perf_event.h (PERF_ATTR_SIZE_VER5 and later accept the
zero tail of a larger attribute).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import struct
from dataclasses import dataclass

from coral_ebpf.probes.linux.bpf import BpfSyscallError
from coral_ebpf.probes.linux.libc import LIBC, syscall_number

PERF_TYPE_TRACEPOINT = 2
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_SET_BPF = 0x40042408
PERF_ATTR_SIZE = 112


@dataclass(frozen=True)
class PerfEventSpec:
    type: int
    config: int = 0
    config1_text: bytes | None = None  # kprobe function name or uprobe binary path
    config2: int = 0  # kprobe/uprobe offset


def perf_event_open(spec: PerfEventSpec, pid: int = -1, cpu: int = 0) -> int:
    attr = ctypes.create_string_buffer(PERF_ATTR_SIZE)
    text = ctypes.create_string_buffer(spec.config1_text) if spec.config1_text is not None else None
    struct.pack_into("<IIQQQ", attr, 0, spec.type, PERF_ATTR_SIZE, spec.config, 1, PERF_SAMPLE_RAW)
    struct.pack_into("<I", attr, 48, 1)  # wakeup_events
    struct.pack_into("<QQ", attr, 56, ctypes.addressof(text) if text is not None else 0, spec.config2)
    try:
        nr_perf = syscall_number("perf_event_open")
    except OSError as exc:
        raise BpfSyscallError(exc.errno or errno.ENOSYS, str(exc.strerror)) from None
    result = LIBC.syscall(
        ctypes.c_long(nr_perf), attr, ctypes.c_int(pid), ctypes.c_int(cpu), ctypes.c_int(-1),
        ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC),
    )  # fmt: skip
    if result < 0:
        raise BpfSyscallError(ctypes.get_errno(), f"perf_event_open type {spec.type}")
    return int(result)


def perf_event_set_bpf(perf_fd: int, prog_fd: int) -> None:
    try:
        fcntl.ioctl(perf_fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
    except OSError as exc:
        raise BpfSyscallError(exc.errno or errno.EIO, "ioctl(PERF_EVENT_IOC_SET_BPF)") from None
