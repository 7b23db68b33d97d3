"""What the engine knows about each traced process: its resource attributes and its sockets.

The BPF program reports the listening fd a connection was accepted from (no kernel struct
layouts are read), and this module turns (pid, fd) into the socket's local address and port
through `/proc/<pid>/fd` and `/proc/<pid>/net/tcp{,6}` — read in the process's own network
namespace, once per listening socket.
"""

from __future__ import annotations

import ipaddress
import mmap
import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

from coral_ebpf import __version__
from coral_ebpf.discovery.model import ServiceEntry
from coral_ebpf.probes.linux import procfs

SDK_NAME = "coral-ebpf"
_WILDCARDS = ("0.0.0.0", "::")
_GO_BUILDINFO = b"\xff Go buildinf:"
_LANGUAGE_BY_EXE = (
    ("python", "python"),
    ("node", "nodejs"),
    ("java", "java"),
    ("ruby", "ruby"),
    ("php", "php"),
    ("dotnet", "dotnet"),
    ("perl", "perl"),
    ("beam", "erlang"),
    ("erl", "erlang"),
)


@dataclass(frozen=True)
class SocketInfo:
    address: str
    port: int


def detect_language(exe: str) -> str:
    """Language of an executable, as Beyla names it (`telemetry.sdk.language`); "unknown" if unsure."""
    base = os.path.basename(exe).lower()
    for prefix, language in _LANGUAGE_BY_EXE:
        if base.startswith(prefix):
            return language
    try:
        with open(exe, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data.find(_GO_BUILDINFO, 0, 64 * 1024 * 1024) >= 0:
                return "go"
    except (OSError, ValueError):
        pass
    return "unknown"


def _host_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value:
            return value
    return ""


@dataclass
class ServiceInfo:
    """One traced process and the OTLP resource that describes it."""

    entry: ServiceEntry
    hostname: str
    namespace: str = ""
    language: str = "unknown"
    resource: list[tuple[str, str | int]] = field(default_factory=list)

    @classmethod
    def from_entry(cls, entry: ServiceEntry, hostname: str) -> ServiceInfo:
        # The name, namespace and instance id are discovery's (discovery/identity.py), so Beyla agrees.
        info = cls(entry, hostname, entry.namespace, detect_language(entry.exe))
        attributes: list[tuple[str, str | int]] = [
            ("service.name", entry.name),
            ("service.instance.id", entry.instance_id(hostname)),
            ("telemetry.sdk.name", SDK_NAME),
            ("telemetry.sdk.language", info.language),
            ("telemetry.sdk.version", __version__),
            ("host.name", hostname),
            ("os.type", "linux"),
            ("process.pid", entry.pid),
        ]
        if info.namespace:
            attributes.insert(1, ("service.namespace", info.namespace))
        host_id = _host_id()
        if host_id:
            attributes.append(("host.id", host_id))
        if entry.exe:
            attributes.append(("process.executable.path", entry.exe))
        info.resource = attributes
        return info


def _decode_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = struct.unpack("<4I", raw)
    address = ipaddress.IPv6Address(struct.pack(">4I", *words))
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else str(address)


def tcp_socket(pid: int, inode: int) -> SocketInfo | None:
    """Local address and port of the TCP socket `inode`, from the process's own namespace."""
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[9] == str(inode):
                address, _, port = parts[1].partition(":")
                return SocketInfo(_decode_address(address), int(port, 16))
    return None


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class SocketResolver:
    """`server.address` and `server.port` of a connection, cached per listening socket and peer."""

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname
        self._listeners: dict[tuple[int, int], SocketInfo | None] = {}
        self._locals: dict[tuple[int, str], str] = {}
        self._connections: dict[tuple[int, int], SocketInfo | None] = {}

    def forget(self, pid: int) -> None:
        for cache in (self._listeners, self._connections):
            for key in [key for key in cache if key[0] == pid]:
                del cache[key]
        for local in [local for local in self._locals if local[0] == pid]:
            del self._locals[local]

    def _socket(self, cache: dict[tuple[int, int], SocketInfo | None], pid: int, fd: int) -> SocketInfo | None:
        key = (pid, fd)
        if key not in cache:
            inode = procfs.socket_inode(pid, fd)
            cache[key] = tcp_socket(pid, inode) if inode is not None else None
            if len(cache) > 65536:
                cache.clear()
        return cache[key]

    def server(self, entry: ServiceEntry, listen_fd: int, fd: int, peer: str) -> tuple[str, int]:
        pid = entry.pid
        info: SocketInfo | None = None
        if listen_fd >= 0:
            info = self._socket(self._listeners, pid, listen_fd)
        if info is None:
            # inferred connection (accepted before the probe) or a listener already closed
            info = self._socket(self._connections, pid, fd) if listen_fd < 0 else None
        if info is None:
            ports = entry.ports
            info = SocketInfo("", ports[0] if len(ports) == 1 else 0)
        return self._address(pid, info, fd, peer), info.port

    def _address(self, pid: int, info: SocketInfo, fd: int, peer: str) -> str:
        if info.address and info.address not in _WILDCARDS:
            return info.address
        if is_loopback(peer):
            return "::1" if ":" in peer else "127.0.0.1"
        key = (pid, peer)
        if key not in self._locals:
            local = self._socket(self._connections, pid, fd) if peer else None
            self._locals[key] = local.address if local is not None and local.address else self._hostname
        return self._locals[key]
