"""Where the tracker reads the host, and the kernel-side watch list it keeps: small protocols so
the state machine can be tested on synthetic data and run on the real /proc and sock_diag."""

from __future__ import annotations

from typing import Protocol

from coral_ebpf.discovery import snapshot
from coral_ebpf.discovery.snapshot import ListeningSocket
from coral_ebpf.probes.linux import procfs
from coral_ebpf.probes.linux.procfs import ProcessInfo


class ProcessSource(Protocol):
    """Where the tracker reads processes and sockets (procfs and sock_diag; fakes in unit tests)."""

    def inspect(self, pid: int) -> ProcessInfo | None: ...
    def start_ticks(self, pid: int) -> int | None: ...
    def socket_inodes(self, pid: int) -> set[int]: ...
    def holders_of(self, inodes: set[int]) -> dict[int, set[int]]: ...
    def listeners_in(self, netns: int) -> list[ListeningSocket] | None: ...
    def thread_netns(self, tgid: int, tid: int) -> int: ...


class Watcher(Protocol):
    """The kernel-side filter: exec/exit/fork are reported only for watched pids."""

    def watch(self, pid: int) -> None: ...
    def unwatch(self, pid: int) -> None: ...


class ProcfsSource:
    def inspect(self, pid: int) -> ProcessInfo | None:
        return procfs.inspect(pid)

    def start_ticks(self, pid: int) -> int | None:
        return procfs.start_ticks(pid)

    def socket_inodes(self, pid: int) -> set[int]:
        return procfs.socket_inodes(pid)

    def holders_of(self, inodes: set[int]) -> dict[int, set[int]]:
        return procfs.holders_of(inodes)

    def listeners_in(self, netns: int) -> list[ListeningSocket] | None:
        return snapshot.listeners_in(netns)

    def thread_netns(self, tgid: int, tid: int) -> int:
        return procfs.task_netns(tgid, tid)


class NoWatcher:
    def watch(self, pid: int) -> None:
        return None

    def unwatch(self, pid: int) -> None:
        return None
