"""The event layout `bpf/http_red.bpf.c` sends, and its decoding. Keep both sides in step."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

# flags (RED_F_* in the BPF program)
FLAG_CLOSED = 1
FLAG_TRUNCATED = 2
FLAG_INFERRED = 4
FLAG_SCAN = 8

METHODS = ("", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE")

# counters (C_* in the BPF program), by index
COUNTER_NAMES = (
    "events",
    "events_lost",
    "pipeline_full",
    "unmatched_responses",
    "non_http_connections",
    "inferred_connections",
    "closed_without_response",
    "accepted_connections",
)

# Slot order of the `tails` program array in bpf/http_red.bpf.c (TAIL_PARSE_READ, ...).
TAIL_PROGRAMS = ("red_parse_read", "red_pipe_read", "red_pipe_write", "red_pipe_next", "red_pipe_write_next")

_HEADER = struct.Struct("<QQQIIiiHHHBBB7x16s")
_TARGET_END = (b" ", b"?", b"\r", b"\n", b"\0", b"#")


def event_size(path_max: int) -> int:
    return _HEADER.size + path_max


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
    def kind_key(self) -> tuple[int, str, str, int, int, int, int, str]:
        """What decides a request's attributes: same key, same attributes (the engine caches by it)."""
        inferred_fd = self.fd if self.listen_fd < 0 else -1
        return (
            self.tgid,
            self.method,
            self.target,
            self.status,
            self.flags & FLAG_TRUNCATED,
            self.listen_fd,
            inferred_fd,
            self.peer_address,
        )

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
    if len(data) < _HEADER.size + path_max:
        return None
    (
        start_ns,
        end_ns,
        conn_id,
        tgid,
        pid,
        fd,
        listen_fd,
        status,
        peer_port,
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
