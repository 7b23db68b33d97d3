"""`struct red_event` (bpf/http_red/http_red.h) and the constants the C side gets as `-D`.

The event is a fixed header (`RedEventHeader`) followed by `path[RED_PATH_MAX]`; the decoder
reads the header with one `struct.Struct` whose format `HEADER_FORMAT` must describe the same
bytes (a unit test compiles the header and checks both).
"""

from __future__ import annotations

import ctypes
from enum import IntEnum

# event flags (RED_F_*)
FLAG_CLOSED = 1  # connection closed before a response: status 0
FLAG_TRUNCATED = 2  # the request target was longer than RED_PATH_MAX
FLAG_INFERRED = 4  # connection not seen accepted (it predates the probe)
FLAG_SCAN = 8  # path[] holds path_len raw bytes: the target ends at the first ' ', '?' or CR

# M_<name> is the index of the method's name; 0 (M_NONE) is no method.
METHODS = ("", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE")

# A pre-filter over the `targets` map: slot tgid % RED_FILTER_SLOTS counts the targets there.
FILTER_SLOTS = 4096


class Counter(IntEnum):
    """Slots of the per-CPU `counters` array (C_*)."""

    EVENTS = 0
    FIFO_FULL = 1
    UNMATCHED = 2
    NOT_HTTP = 3
    INFERRED = 4
    NO_RESPONSE = 5
    ACCEPTED = 6


COUNTER_NAMES = {
    Counter.EVENTS: "events",
    Counter.FIFO_FULL: "pipeline_full",
    Counter.UNMATCHED: "unmatched_responses",
    Counter.NOT_HTTP: "non_http_connections",
    Counter.INFERRED: "inferred_connections",
    Counter.NO_RESPONSE: "closed_without_response",
    Counter.ACCEPTED: "accepted_connections",
}


class Tail(IntEnum):
    """Slots of the `tails` program array (TAIL_*)."""

    PARSE_READ = 0
    PIPE_READ = 1
    PIPE_WRITE = 2
    PIPE_NEXT = 3
    PIPE_WRITE_NEXT = 4


# The program each tail-call slot runs.
TAIL_PROGRAMS = {
    Tail.PARSE_READ: "red_parse_read",
    Tail.PIPE_READ: "red_pipe_read",
    Tail.PIPE_WRITE: "red_pipe_write",
    Tail.PIPE_NEXT: "red_pipe_next",
    Tail.PIPE_WRITE_NEXT: "red_pipe_write_next",
}


def defines() -> dict[str, int | str]:
    """The constants of http_red.h, as `-D` defines."""
    out: dict[str, int | str] = {
        "RED_F_CLOSED": FLAG_CLOSED,
        "RED_F_TRUNCATED": FLAG_TRUNCATED,
        "RED_F_INFERRED": FLAG_INFERRED,
        "RED_F_SCAN": FLAG_SCAN,
        "RED_FILTER_SLOTS": FILTER_SLOTS,
        "C_COUNT": len(Counter),
        "TAIL_COUNT": len(Tail),
        "M_NONE": 0,
    }
    out |= {f"C_{counter.name}": int(counter) for counter in Counter}
    out |= {f"TAIL_{tail.name}": int(tail) for tail in Tail}
    out |= {f"M_{name}": code for code, name in enumerate(METHODS) if name}
    return out


class RedEventHeader(ctypes.Structure):
    """`struct red_event` up to `path`."""

    _fields_ = [
        ("start_ns", ctypes.c_uint64),
        ("end_ns", ctypes.c_uint64),
        ("conn_id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("fd", ctypes.c_int32),
        ("peer_port", ctypes.c_uint16),
        ("_pad", ctypes.c_uint16),
        ("tgid", ctypes.c_uint32),  # the attribute bytes start here
        ("listen_fd", ctypes.c_int32),
        ("inferred_fd", ctypes.c_int32),
        ("status", ctypes.c_uint16),
        ("path_len", ctypes.c_uint16),
        ("method", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("peer_family", ctypes.c_uint8),
        ("_pad2", ctypes.c_uint8),
        ("peer_addr", ctypes.c_uint8 * 16),
    ]


class ConnKey(ctypes.Structure):
    """`struct conn_key`: the key of the `conns` map."""

    _fields_ = [("tgid", ctypes.c_uint32), ("fd", ctypes.c_int32)]


# The header read in one call: start_ns, end_ns, conn_id, pid, fd, peer_port, pad | tgid, listen_fd,
# inferred_fd, status, path_len, method, flags, peer_family, pad, peer_addr[16]
HEADER_FORMAT = "<QQQIiH2xIiiHHBBBx16s"
# Bytes [ATTRIBUTES_START, PATH_START + path_len) of an event decide its request's attributes.
ATTRIBUTES_START = RedEventHeader.tgid.offset
PATH_LEN_OFFSET = RedEventHeader.path_len.offset
PATH_START = ctypes.sizeof(RedEventHeader)


def event_size(path_max: int) -> int:
    return PATH_START + path_max
