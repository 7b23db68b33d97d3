"""Who holds a TCP port, and the agent's default OTLP ports when another program has them.

Hosts often run an OpenTelemetry Collector or Grafana Alloy on 4317/4318 already. The agent
then starts without the taken default listener (and says which process holds it) rather than
not at all; an endpoint the operator configured to another value stays a start error.
The holder is found the way `ss -ltnp` does: the listening socket's inode in /proc/net/tcp*
(through psutil), matched against every process's socket file descriptors.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, replace

import psutil

from coral_ebpf.otlp.settings import OtlpSettings
from coral_ebpf.units import parse_endpoint

DEFAULTS = OtlpSettings()


@dataclass(frozen=True)
class PortHolder:
    pid: int | None
    name: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.name})" if self.pid is not None else self.name


@dataclass(frozen=True)
class TakenPort:
    key: str  # otlp.grpc_endpoint / otlp.http_endpoint
    endpoint: str
    holders: tuple[PortHolder, ...]

    def describe(self) -> str:
        who = ", ".join(holder.describe() for holder in self.holders) or "a process this agent cannot see"
        return f"{self.key} {self.endpoint} is taken by {who}: that listener is off (set {self.key} to another port)"


def listening_holders(port: int) -> tuple[PortHolder, ...]:
    """The processes with a TCP socket listening on `port` (any address) in this network namespace."""
    holders = []
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return ()
    for connection in connections:
        if connection.status != psutil.CONN_LISTEN or not connection.laddr or connection.laddr.port != port:
            continue
        name = "?"
        if connection.pid is not None:
            try:
                name = psutil.Process(connection.pid).name()
            except psutil.Error:
                name = "exited"
        holders.append(PortHolder(connection.pid, name))
    return tuple(sorted(set(holders), key=lambda holder: (holder.pid or 0, holder.name)))


def in_use(endpoint: str) -> bool:
    """True when binding `endpoint` fails with EADDRINUSE right now."""
    host, port = parse_endpoint(endpoint)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def without_taken_defaults(settings: OtlpSettings) -> tuple[OtlpSettings, tuple[TakenPort, ...]]:
    """`settings` with each *default* OTLP listener whose port is in use turned off, and why."""
    taken = []
    for key in ("grpc_endpoint", "http_endpoint"):
        endpoint = getattr(settings, key)
        if endpoint and endpoint == getattr(DEFAULTS, key) and in_use(endpoint):
            taken.append(TakenPort(f"otlp.{key}", endpoint, listening_holders(parse_endpoint(endpoint)[1])))
            settings = (
                replace(settings, grpc_endpoint=None)
                if key == "grpc_endpoint"
                else replace(settings, http_endpoint=None)
            )
    return settings, tuple(taken)
