"""Decoding the events of http_red (and encoding them, for stand-in probes in tests and benches)."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from coral_ebpf.probes.http_red.layout import (
    ATTRIBUTES_START,
    FLAG_CLOSED,
    FLAG_INFERRED,
    FLAG_SCAN,
    FLAG_TRUNCATED,
    HEADER_FORMAT,
    METHODS,
    PATH_LEN_OFFSET,
    PATH_START,
)

_HEADER = struct.Struct(HEADER_FORMAT)
_TARGET_END = (b" ", b"?", b"\r", b"\n", b"\0", b"#")
TIMES = struct.Struct("<QQ")  # start_ns, end_ns at the start of an event


def attributes_key(record: bytes) -> bytes:
    """The bytes of an event that decide its attributes (same bytes, same attributes)."""
    return record[ATTRIBUTES_START : PATH_START + (record[PATH_LEN_OFFSET] | record[PATH_LEN_OFFSET + 1] << 8)]


@dataclass(frozen=True, slots=True)
class RedEvent:
    """One request, completed by its response or by the connection closing (status 0)."""

    start_ns: int  # CLOCK_MONOTONIC
    end_ns: int
    conn_id: int
    tgid: int
    pid: int
    fd: int
    listen_fd: int
    status: int
    method: str
    target: str
    flags: int
    peer_address: str
    peer_port: int

    @property
    def inferred_fd(self) -> int:
        """The fd of a connection the probe did not see accepted (its local address is looked up), else -1."""
        return self.fd if self.flags & FLAG_INFERRED else -1

    @property
    def truncated(self) -> bool:
        return bool(self.flags & FLAG_TRUNCATED)

    @property
    def closed_without_response(self) -> bool:
        return bool(self.flags & FLAG_CLOSED)


_PEERS: dict[tuple[int, bytes], str] = {}


def _peer(family: int, raw: bytes) -> str:
    key = (family, raw)
    found = _PEERS.get(key)
    if found is None:
        if len(_PEERS) > 65536:
            _PEERS.clear()
        found = _PEERS[key] = _format_peer(family, raw)
    return found


def _format_peer(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == socket.AF_INET6:
        address = ipaddress.IPv6Address(raw)
        mapped = address.ipv4_mapped
        return str(mapped) if mapped is not None else str(address)
    return ""


def decode_event(data: bytes, path_max: int) -> RedEvent | None:
    """Decode one event; None for a record too short to be one (a layout mismatch)."""
    if len(data) < PATH_START + path_max:
        return None
    (
        start_ns,
        end_ns,
        conn_id,
        pid,
        fd,
        peer_port,
        tgid,
        listen_fd,
        _inferred_fd,
        status,
        path_len,
        method_code,
        flags,
        family,
        peer_raw,
    ) = _HEADER.unpack_from(data)
    raw = data[_HEADER.size : _HEADER.size + min(path_len, path_max)]
    if flags & FLAG_SCAN:
        ends = [raw.find(stop) for stop in _TARGET_END]
        found = [index for index in ends if index >= 0]
        if found:
            raw = raw[: min(found)]
        elif len(raw) >= path_max:
            flags |= FLAG_TRUNCATED
    method = METHODS[method_code] if method_code < len(METHODS) else ""
    return RedEvent(
        start_ns=start_ns,
        end_ns=end_ns,
        conn_id=conn_id,
        tgid=tgid,
        pid=pid,
        fd=fd,
        listen_fd=listen_fd,
        status=status,
        method=method,
        target=raw.decode("latin-1"),
        flags=flags,
        peer_address=_peer(family, peer_raw),
        peer_port=peer_port,
    )


_METHOD_CODES = {name: code for code, name in enumerate(METHODS) if name}


def encode_event(event: RedEvent, path_max: int) -> bytes:
    """The bytes the BPF program would send for `event` (for stand-in probes in tests and benches)."""
    family = socket.AF_INET6 if ":" in event.peer_address else socket.AF_INET if event.peer_address else 0
    peer = socket.inet_pton(family, event.peer_address) if family else b""
    target = event.target.encode("latin-1")[:path_max]
    header = _HEADER.pack(
        event.start_ns,
        event.end_ns,
        event.conn_id,
        event.pid,
        event.fd,
        event.peer_port,
        event.tgid,
        event.listen_fd,
        event.inferred_fd,
        event.status,
        len(target),
        _METHOD_CODES.get(event.method, 0),
        event.flags,
        family,
        peer.ljust(16, b"\0"),
    )
    return header + target.ljust(path_max, b"\0")
