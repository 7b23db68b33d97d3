"""Discovery's typed output: the services found on the host and the raw events behind them."""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket."""

    port: int
    family: int = socket.AF_INET  # socket.AF_INET or socket.AF_INET6
    address: str = ""


@dataclass(frozen=True)
class ServiceEntry:
    """One process that listens on TCP ports, in one network namespace."""

    pid: int
    netns: int
    name: str  # OTEL_SERVICE_NAME / SERVICE_NAME from the environment, else the executable name
    exe: str
    cmdline: tuple[str, ...]
    listeners: tuple[Listener, ...]
    cgroup: str = ""
    container_id: str | None = None
    start_time: float = 0.0  # process start, seconds since the epoch (tells PID reuse apart)

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(sorted({listener.port for listener in self.listeners}))


@dataclass(frozen=True)
class DiscoveryEvent:
    """One event from the kernel probes or the start-up snapshot."""

    event: str  # snapshot | listen | close | exec | exit
    pid: int
    tgid: int
    comm: str
    netns: int
    ts_ns: int
    port: int | None = None
    family: int | None = None
    cgroup_id: int = 0
    filename: str = ""
