"""A listen_events record, decoded."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from coral_ebpf.probes.layout import record_at, text
from coral_ebpf.probes.listen_events.layout import KIND_NAMES, ListenEventRecord


@dataclass(frozen=True, slots=True)
class ListenEvent:
    kind: str  # listen | close
    ts_ns: int  # CLOCK_MONOTONIC
    cgroup_id: int
    pid: int
    tgid: int
    netns: int  # inode of the socket's network namespace, 0 if unknown
    comm: str
    port: int
    family: int
    address: str
    inode: int  # socket inode, 0 if unknown
    sock_id: int  # the kernel's identity of the socket between LISTEN and CLOSE


def format_address(family: int, raw: bytes) -> str:
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return socket.inet_ntop(socket.AF_INET, raw[:4])


def decode(data: int, size: int) -> ListenEvent | None:
    """The record at address `data` (from BCC's callback), or None if it is short or of an unknown kind."""
    record = record_at(ListenEventRecord, data, size)
    kind = KIND_NAMES.get(record.kind) if record is not None else None
    if record is None or kind is None:
        return None
    return ListenEvent(
        kind=kind,
        ts_ns=record.ts_ns,
        cgroup_id=record.cgroup_id,
        pid=record.pid,
        tgid=record.tgid,
        netns=record.netns,
        comm=text(record.comm),
        port=record.port,
        family=record.family,
        address=format_address(record.family, bytes(record.addr)),
        inode=record.inode,
        sock_id=record.sock_id,
    )
