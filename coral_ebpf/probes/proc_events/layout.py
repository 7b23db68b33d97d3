"""`struct proc_event` (bpf/proc_events/proc_events.h) and the constants the C side gets as `-D`."""

from __future__ import annotations

import ctypes

from coral_ebpf.probes.layout import COMM_LEN

EVENT_EXEC = 1
EVENT_EXIT = 2
EVENT_FORK = 3
FILENAME_LEN = 256
KIND_NAMES = {EVENT_EXEC: "exec", EVENT_EXIT: "exit", EVENT_FORK: "fork"}


def defines() -> dict[str, int | str]:
    return {
        "EVENT_EXEC": EVENT_EXEC,
        "EVENT_EXIT": EVENT_EXIT,
        "EVENT_FORK": EVENT_FORK,
        "COMM_LEN": COMM_LEN,
        "FILENAME_LEN": FILENAME_LEN,
    }


class ProcEventRecord(ctypes.Structure):
    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("kind", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("tgid", ctypes.c_uint32),
        ("netns", ctypes.c_uint32),
        ("other_pid", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("comm", ctypes.c_char * COMM_LEN),
        ("filename", ctypes.c_char * FILENAME_LEN),
    ]
