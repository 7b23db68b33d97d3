"""The one libc handle of the agent, the one syscall-number table, and errno-checked calls.

`ctypes.CDLL(None)` is the C library the interpreter is linked against; `use_errno` makes
`ctypes.get_errno()` report the errno of the last call made through it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long

# machine -> syscall name -> number (arch/*/entry/syscalls tables; only what libc does not wrap)
SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"bpf": 321, "perf_event_open": 298},
    "aarch64": {"bpf": 280, "perf_event_open": 241},
    "armv7l": {"bpf": 386, "perf_event_open": 364},
    "ppc64le": {"bpf": 361, "perf_event_open": 319},
    "s390x": {"bpf": 351, "perf_event_open": 331},
    "riscv64": {"bpf": 280, "perf_event_open": 241},
}


def syscall_number(name: str, machine: str | None = None) -> int:
    """The number of syscall `name` on this machine; OSError(ENOSYS) when the table lacks it."""
    machine = machine or platform.machine()
    number = SYSCALL_NUMBERS.get(machine, {}).get(name)
    if number is None:
        raise OSError(errno.ENOSYS, f"{name} syscall number unknown for machine {machine!r}")
    return number


def check(result: int, what: str) -> int:
    """`result` when it is not negative, else OSError(errno, "what: strerror")."""
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return int(result)
