"""Discovery's typed output: the services found on the host and the raw events behind them."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from coral_ebpf.discovery.identity import IdentityRule, ServiceIdentity


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket."""

    port: int
    family: int = socket.AF_INET  # socket.AF_INET or socket.AF_INET6
    address: str = ""
    inode: int = 0  # socket inode (as in /proc/<pid>/fd), 0 when unknown


@dataclass(frozen=True)
class ServiceEntry:
    """One process that listens on TCP ports, in one network namespace."""

    pid: int
    netns: int
    name: str  # service.name, as the identity rules chose it (discovery/identity.py)
    exe: str
    cmdline: tuple[str, ...]
    listeners: tuple[Listener, ...]
    cgroup: str = ""
    container_id: str | None = None
    start_time: float = 0.0  # process start, seconds since the epoch (tells PID reuse apart)
    comm: str = ""  # the kernel's 15-character task name
    identity: ServiceIdentity | None = None  # None only for entries made up outside discovery

    @property
    def namespace(self) -> str:
        return self.identity.namespace if self.identity else ""

    @property
    def rule(self) -> IdentityRule | None:
        """The identity rule that named the service; None for entries made up outside discovery."""
        return self.identity.rule if self.identity else None

    def instance_id(self, hostname: str) -> str:
        """`<host>:<pid>`, as the identity gives it (entries made up outside discovery: from `hostname`)."""
        return self.identity.instance_id if self.identity else f"{hostname}:{self.pid}"

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(sorted({listener.port for listener in self.listeners}))


@dataclass(frozen=True)
class DiscoveryEvent:
    """One event from the kernel probes or the start-up snapshot.

    `pid` is the kernel's thread id and `tgid` the process id (what `ps` calls the PID); for
    snapshot events both are the process id.
    """

    event: str  # snapshot | listen | close | exec | exit | fork
    pid: int
    tgid: int
    comm: str
    netns: int
    ts_ns: int  # CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns, time.monotonic_ns)
    port: int | None = None
    family: int | None = None
    cgroup_id: int = 0
    filename: str = ""  # exec: the path given to execve
    address: str = ""  # listen/close/snapshot: the bound address ("0.0.0.0", "::1", ...)
    inode: int = 0  # listen/close/snapshot: the socket inode, 0 when the kernel layout is unknown
    sock_id: int = 0  # listen/close: the kernel's identity for the socket between the two events
    child_pid: int = 0  # fork: the new process
    service: str = ""  # the service name of the process, when discovery knows it
    rule: str = ""  # the identity rule that named it (an IdentityRule value)
