"""The probes' event records (bpf/discovery_events.h) as ctypes structures, decoded to DiscoveryEvent."""

from __future__ import annotations

import ctypes
import socket

from coral_ebpf.discovery.model import DiscoveryEvent

EVENT_EXEC = 1
EVENT_EXIT = 2
EVENT_FORK = 3
EVENT_LISTEN = 4
EVENT_CLOSE = 5

KIND_NAMES = {EVENT_EXEC: "exec", EVENT_EXIT: "exit", EVENT_FORK: "fork", EVENT_LISTEN: "listen", EVENT_CLOSE: "close"}
COMM_LEN = 16
FILENAME_LEN = 256


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


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def format_address(family: int, raw: bytes) -> str:
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return socket.inet_ntop(socket.AF_INET, raw[:4])


def decode_proc_event(data: int, size: int) -> DiscoveryEvent | None:
    """A proc_events record at address `data` (from BCC's callback), or None if it is short or unknown."""
    if size < ctypes.sizeof(ProcEventRecord):
        return None
    record = ProcEventRecord.from_address(data)
    kind = KIND_NAMES.get(record.kind)
    if kind is None:
        return None
    return DiscoveryEvent(
        event=kind,
        pid=record.pid,
        tgid=record.tgid,
        comm=_text(record.comm),
        netns=record.netns,
        ts_ns=record.ts_ns,
        cgroup_id=record.cgroup_id,
        filename=_text(record.filename) if record.kind == EVENT_EXEC else "",
        child_pid=record.other_pid if record.kind == EVENT_FORK else 0,
    )


def decode_listen_event(data: int, size: int) -> DiscoveryEvent | None:
    if size < ctypes.sizeof(ListenEventRecord):
        return None
    record = ListenEventRecord.from_address(data)
    kind = KIND_NAMES.get(record.kind)
    if kind not in ("listen", "close"):
        return None
    return DiscoveryEvent(
        event=kind,
        pid=record.pid,
        tgid=record.tgid,
        comm=_text(record.comm),
        netns=record.netns,
        ts_ns=record.ts_ns,
        port=record.port,
        family=record.family,
        cgroup_id=record.cgroup_id,
        address=format_address(record.family, bytes(record.addr)),
        inode=record.inode,
        sock_id=record.sock_id,
    )
