"""`struct listen_event` (bpf/listen_events/listen_events.h) and the constants the C side gets as `-D`."""

from __future__ import annotations

import ctypes

from coral_ebpf.probes.layout import COMM_LEN

# Numbered after proc_events' kinds: discovery handles both probes' events in one stream.
EVENT_LISTEN = 4
EVENT_CLOSE = 5
KIND_NAMES = {EVENT_LISTEN: "listen", EVENT_CLOSE: "close"}


def defines() -> dict[str, int | str]:
    return {"EVENT_LISTEN": EVENT_LISTEN, "EVENT_CLOSE": EVENT_CLOSE, "COMM_LEN": COMM_LEN}


class ListenEventRecord(ctypes.Structure):
    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("inode", ctypes.c_uint64),
        ("sock_id", ctypes.c_uint64),
        ("kind", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("tgid", ctypes.c_uint32),
        ("netns", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("family", ctypes.c_uint16),
        ("pad", ctypes.c_uint32),
        ("addr", ctypes.c_uint8 * 16),
        ("comm", ctypes.c_char * COMM_LEN),
    ]
