"""Discovery's state machine on synthetic events, with /proc and sock_diag replaced by a table."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from coral_ebpf.discovery.exclusion import Exclusion
from coral_ebpf.discovery.model import DiscoveryEvent, ServiceEntry
from coral_ebpf.discovery.registry import ServiceRegistry
from coral_ebpf.discovery.snapshot import ListeningSocket, Snapshot
from coral_ebpf.discovery.tracker import Tracker
from coral_ebpf.probes.linux.procfs import ProcessInfo

NETNS = 4026531000
AGENT_PID = 1


def info(pid: int, ticks: int = 100, exe: str = "/usr/bin/server", name: str = "", comm: str = "server") -> ProcessInfo:
    return ProcessInfo(
        pid=pid,
        start_ticks=ticks,
        comm=comm,
        exe=exe,
        cmdline=(exe, "--serve"),
        service_name=name or exe.rsplit("/", 1)[-1],
        cgroup="/system.slice/server.service",
        container_id=None,
        environ_name=name,
    )


class FakeHost:
    """Processes, fd tables and listening sockets; also the kernel-side watch list."""

    def __init__(self) -> None:
        self.procs: dict[int, ProcessInfo] = {}
        self.fds: dict[int, set[int]] = {}
        self.live: dict[int, list[ListeningSocket]] = {}
        self.watched: set[int] = set()
        self.calls: list[tuple[str, int]] = []

    # ProcessSource
    def inspect(self, pid: int) -> ProcessInfo | None:
        self.calls.append(("inspect", pid))
        return self.procs.get(pid)

    def start_ticks(self, pid: int) -> int | None:
        found = self.procs.get(pid)
        return found.start_ticks if found else None

    def socket_inodes(self, pid: int) -> set[int]:
        return set(self.fds.get(pid, set()))

    def holders_of(self, inodes: set[int]) -> dict[int, set[int]]:
        out: dict[int, set[int]] = {}
        for pid, held in self.fds.items():
            for inode in held & inodes:
                out.setdefault(inode, set()).add(pid)
        return out

    def listeners_in(self, netns: int) -> list[ListeningSocket] | None:
        return self.live.get(netns, [])

    def thread_netns(self, tgid: int, tid: int) -> int:
        return NETNS

    # Watcher
    def watch(self, pid: int) -> None:
        self.calls.append(("watch", pid))
        self.watched.add(pid)

    def unwatch(self, pid: int) -> None:
        self.calls.append(("unwatch", pid))
        self.watched.discard(pid)

    # what a real process does
    def start(self, pid: int, inodes: set[int] | None = None, **kwargs: Any) -> ProcessInfo:
        self.procs[pid] = info(pid, **kwargs)
        self.fds[pid] = set(inodes or ())
        return self.procs[pid]

    def open_listener(self, pid: int, port: int, inode: int, family: int = socket.AF_INET) -> None:
        self.fds.setdefault(pid, set()).add(inode)
        self.live.setdefault(NETNS, []).append(
            ListeningSocket(NETNS, family, "127.0.0.1" if family == socket.AF_INET else "::1", port, inode, 0)
        )

    def close_listener(self, inode: int) -> None:
        for held in self.fds.values():
            held.discard(inode)
        self.live[NETNS] = [item for item in self.live.get(NETNS, []) if item.inode != inode]

    def end(self, pid: int) -> None:
        self.procs.pop(pid, None)
        self.fds.pop(pid, None)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry() -> ServiceRegistry:
    return ServiceRegistry()


@pytest.fixture
def tracker(registry: ServiceRegistry, host: FakeHost, clock: Clock) -> Tracker:
    return Tracker(registry, Exclusion(["*sidecar*"], agent_pids={AGENT_PID}), source=host, watcher=host, clock=clock)


def event(kind: str, pid: int, ts: int, **fields: Any) -> DiscoveryEvent:
    defaults: dict[str, Any] = {"comm": "server", "netns": NETNS}
    if kind in ("listen", "close"):
        defaults |= {"family": socket.AF_INET, "address": "127.0.0.1"}
    return DiscoveryEvent(event=kind, pid=pid, tgid=pid, ts_ns=ts, **(defaults | fields))


def listen(pid: int, port: int, inode: int, ts: int, **fields: Any) -> DiscoveryEvent:
    return event("listen", pid, ts, **({"port": port, "inode": inode, "sock_id": inode * 1000} | fields))


def close(pid: int, port: int, inode: int, ts: int, **fields: Any) -> DiscoveryEvent:
    return event("close", pid, ts, **({"port": port, "inode": inode, "sock_id": inode * 1000} | fields))


def by_pid(registry: ServiceRegistry) -> dict[int, ServiceEntry]:
    return {entry.pid: entry for entry in registry.snapshot()}


def test_listen_adds_an_entry_watching_before_reading_proc(tracker: Tracker, host: FakeHost) -> None:
    host.start(10, name="payments")
    host.open_listener(10, 8080, 501)
    tracker.handle(listen(10, 8080, 501, ts=5))
    entry = by_pid(tracker.registry)[10]
    assert (entry.name, entry.ports, entry.netns, entry.exe) == ("payments", (8080,), NETNS, "/usr/bin/server")
    assert entry.listeners[0].inode == 501
    assert host.calls.index(("watch", 10)) < host.calls.index(("inspect", 10))
    assert 10 in host.watched


def test_close_removes_the_entry_and_unwatches(tracker: Tracker, host: FakeHost) -> None:
    host.start(10)
    tracker.handle(listen(10, 8080, 501, ts=5))
    tracker.handle(listen(10, 8081, 502, ts=6))
    tracker.handle(close(10, 8080, 501, ts=7))
    assert by_pid(tracker.registry)[10].ports == (8081,)
    tracker.handle(close(10, 8081, 502, ts=8))
    assert tracker.registry.snapshot() == []
    assert 10 not in host.watched


def test_exit_removes_the_process(tracker: Tracker, host: FakeHost, clock: Clock) -> None:
    host.start(10)
    tracker.handle(listen(10, 8080, 501, ts=5))
    host.end(10)
    tracker.handle(event("exit", 10, ts=9))
    assert tracker.registry.snapshot() == []
    clock.advance(1)
    tracker.run_due()  # the orphan check finds the socket gone
    assert tracker.registry.socket_count() == 0


def test_listen_after_the_exit_that_followed_it_is_ignored(tracker: Tracker, host: FakeHost) -> None:
    """Listen and exit arrive on different buffers: a late listen must not resurrect the process."""
    host.start(10)
    tracker.handle(listen(10, 8080, 501, ts=5))
    tracker.handle(event("exit", 10, ts=9))
    tracker.handle(listen(10, 8081, 502, ts=7))
    assert tracker.registry.snapshot() == []
    assert tracker.outcomes["stale"] == 1


def test_short_lived_process_leaves_no_entry_but_its_events_are_seen(tracker: Tracker, host: FakeHost) -> None:
    seen: list[str] = []
    tracker.registry.subscribe_events(lambda item: seen.append(item.event))
    tracker.handle(listen(20, 9000, 601, ts=5))  # gone before we could read /proc
    assert tracker.registry.snapshot() == []
    assert tracker.outcomes["short_lived"] == 1
    assert 20 not in host.watched
    tracker.handle(close(20, 9000, 601, ts=6))
    assert seen == ["listen", "close"]


def test_pid_reuse_replaces_the_old_process(tracker: Tracker, host: FakeHost, clock: Clock) -> None:
    host.start(30, ticks=100, comm="old")
    host.open_listener(30, 7000, 701)
    tracker.handle(listen(30, 7000, 701, ts=5, comm="old"))
    # The old process died and its exit was lost; a new one got the same pid.
    host.close_listener(701)
    host.start(30, ticks=900, exe="/usr/bin/newer", comm="newer")
    host.open_listener(30, 7100, 702)
    tracker.handle(listen(30, 7100, 702, ts=50, comm="newer"))
    clock.advance(1)
    tracker.run_due()
    entry = by_pid(tracker.registry)[30]
    assert (entry.exe, entry.ports) == ("/usr/bin/newer", (7100,))
    assert tracker.outcomes["pid_reuse"] == 1


def test_an_exit_older_than_the_process_is_not_its_own(tracker: Tracker, host: FakeHost) -> None:
    host.start(30)
    tracker.handle(listen(30, 7000, 701, ts=100))
    tracker.handle(event("exit", 30, ts=50))  # perf buffers: an earlier incarnation's exit, late
    assert by_pid(tracker.registry)[30].ports == (7000,)


def test_reuseport_sockets_are_separate_and_close_one_keeps_the_other(tracker: Tracker, host: FakeHost) -> None:
    host.start(40)
    host.start(41)
    tracker.handle(listen(40, 8443, 801, ts=5))
    tracker.handle(listen(41, 8443, 802, ts=6))
    assert {pid: entry.ports for pid, entry in by_pid(tracker.registry).items()} == {40: (8443,), 41: (8443,)}
    tracker.handle(close(40, 8443, 801, ts=7))
    assert {pid: entry.ports for pid, entry in by_pid(tracker.registry).items()} == {41: (8443,)}


def test_a_port_freed_by_one_process_and_taken_by_another(tracker: Tracker, host: FakeHost) -> None:
    host.start(50)
    host.start(51)
    tracker.handle(listen(50, 8000, 901, ts=5))
    tracker.handle(close(50, 8000, 901, ts=6))
    tracker.handle(listen(51, 8000, 902, ts=7))
    assert list(by_pid(tracker.registry)) == [51]


def test_exec_refreshes_identity_and_keeps_inherited_listeners(tracker: Tracker, host: FakeHost) -> None:
    host.start(60, exe="/usr/bin/launcher")
    host.open_listener(60, 8080, 1001)
    tracker.handle(listen(60, 8080, 1001, ts=5))
    host.procs[60] = info(60, exe="/usr/bin/real-server", name="real", comm="real-server")
    tracker.handle(event("exec", 60, ts=6, comm="real-server", filename="/usr/bin/real-server"))
    entry = by_pid(tracker.registry)[60]
    assert (entry.exe, entry.name, entry.ports) == ("/usr/bin/real-server", "real", (8080,))


def test_exec_releases_sockets_closed_on_exec(tracker: Tracker, host: FakeHost, clock: Clock) -> None:
    host.start(60)
    host.open_listener(60, 8080, 1001)
    host.start(61)
    host.fds[61] = {1001}  # a forked sibling also holds it, so exec does not close the socket
    tracker.handle(listen(60, 8080, 1001, ts=5))
    host.fds[60] = set()
    tracker.handle(event("exec", 60, ts=6, filename="/bin/true"))
    assert 60 not in by_pid(tracker.registry)
    clock.advance(1)
    tracker.run_due()  # the socket is still listening: whoever holds it now is found
    assert by_pid(tracker.registry)[61].ports == (8080,)


def test_exec_into_an_excluded_program_drops_the_process(tracker: Tracker, host: FakeHost) -> None:
    host.start(60)
    tracker.handle(listen(60, 8080, 1001, ts=5))
    host.procs[60] = info(60, exe="/opt/beyla/beyla", comm="beyla")
    tracker.handle(event("exec", 60, ts=6, comm="beyla"))
    assert tracker.registry.snapshot() == []
    assert 60 not in host.watched


def test_fork_child_holding_the_listener_joins_after_the_grace(tracker: Tracker, host: FakeHost, clock: Clock) -> None:
    host.start(70, name="web")
    host.open_listener(70, 8000, 1101)
    tracker.handle(listen(70, 8000, 1101, ts=5))
    host.start(71, inodes={1101}, name="web")  # a pre-fork worker
    host.start(72, inodes=set())  # a helper that closed its inherited fds
    tracker.handle(event("fork", 70, ts=6, child_pid=71))
    tracker.handle(event("fork", 70, ts=7, child_pid=72))
    assert set(by_pid(tracker.registry)) == {70}
    clock.advance(0.05)
    tracker.run_due()
    assert set(by_pid(tracker.registry)) == {70}  # still inside the grace period
    clock.advance(0.1)
    tracker.run_due()
    assert set(by_pid(tracker.registry)) == {70, 71}
    assert by_pid(tracker.registry)[71].ports == (8000,)
    assert 71 in host.watched and 72 not in host.watched


def test_daemon_parent_exits_and_the_child_keeps_the_port(tracker: Tracker, host: FakeHost) -> None:
    host.start(80)
    host.open_listener(80, 8500, 1201)
    tracker.handle(listen(80, 8500, 1201, ts=5))
    host.start(81, inodes={1201}, exe="/usr/sbin/daemon")
    tracker.handle(event("fork", 80, ts=6, child_pid=81))
    host.end(80)
    tracker.handle(event("exit", 80, ts=7))  # checks the pending child at once
    assert {pid: entry.ports for pid, entry in by_pid(tracker.registry).items()} == {81: (8500,)}


def test_socket_passed_to_an_unrelated_process_is_found_after_exit(
    tracker: Tracker, host: FakeHost, clock: Clock
) -> None:
    host.start(90)
    host.open_listener(90, 8600, 1301)
    tracker.handle(listen(90, 8600, 1301, ts=5))
    host.start(95, inodes={1301}, exe="/usr/bin/successor")  # got it over SCM_RIGHTS
    host.end(90)
    tracker.handle(event("exit", 90, ts=7))
    assert tracker.registry.snapshot() == []
    clock.advance(1)
    tracker.run_due()
    assert by_pid(tracker.registry)[95].ports == (8600,)
    assert tracker.outcomes["inherited"] == 1


def test_exclusion_of_agent_beyla_and_patterns(tracker: Tracker, host: FakeHost) -> None:
    seen: list[int] = []
    tracker.registry.subscribe_events(lambda item: seen.append(item.tgid))
    host.start(AGENT_PID, exe="/usr/bin/python3")
    host.start(100, exe="/usr/local/bin/beyla", comm="beyla")
    host.start(101, exe="/usr/bin/envoy", name="mesh-sidecar")
    host.start(102, exe="/usr/bin/api")
    for pid, inode in ((AGENT_PID, 1), (100, 2), (101, 3), (102, 4)):
        tracker.handle(listen(pid, 9000 + pid, inode, ts=5))
    assert list(by_pid(tracker.registry)) == [102]
    assert seen == [102]  # excluded processes' events are not reported either
    assert host.watched == {102}


def test_no_kernel_layout_close_matches_by_address_preferring_the_closer(tracker: Tracker, host: FakeHost) -> None:
    host.start(110)
    host.start(111)
    tracker.handle(listen(110, 8443, 0, ts=5, netns=0, sock_id=11))
    tracker.handle(listen(111, 8443, 0, ts=6, netns=0, sock_id=12))
    tracker.handle(close(111, 8443, 0, ts=7, netns=0, sock_id=99))  # unknown id: match on address
    assert list(by_pid(tracker.registry)) == [110]
    assert by_pid(tracker.registry)[110].netns == NETNS  # resolved from /proc when the probe could not


def test_listen_without_bind_gets_its_port_from_sock_diag(tracker: Tracker, host: FakeHost) -> None:
    host.start(120)
    host.open_listener(120, 41234, 1401)
    tracker.handle(listen(120, 0, 1401, ts=5))
    assert by_pid(tracker.registry)[120].ports == (41234,)


def test_snapshot_replaces_state_and_supersedes_older_events(tracker: Tracker, host: FakeHost) -> None:
    seen: list[DiscoveryEvent] = []
    tracker.registry.subscribe_events(seen.append)
    host.start(200, name="orders")
    host.start(201, exe="/usr/bin/sidecar-proxy")
    host.start(300)
    tracker.handle(listen(300, 7000, 1500, ts=5))  # state from before, to be replaced
    taken = Snapshot(
        taken_ns=1000,
        sockets=[
            ListeningSocket(NETNS, socket.AF_INET, "0.0.0.0", 8080, 1600, 0),
            ListeningSocket(NETNS, socket.AF_INET6, "::", 8080, 1601, 0),
            ListeningSocket(NETNS, socket.AF_INET, "127.0.0.1", 9999, 1602, 0),
            ListeningSocket(NETNS, socket.AF_INET, "127.0.0.1", 2024, 1603, 0),  # holder unreadable
        ],
        holders={1600: {200}, 1601: {200}, 1602: {201}},
    )
    tracker.load_snapshot(taken)
    entries = by_pid(tracker.registry)
    assert list(entries) == [200]
    assert entries[200].name == "orders" and len(entries[200].listeners) == 2
    assert host.watched == {200}
    assert tracker.outcomes["unattributed"] == 1
    assert [(item.event, item.port, item.service) for item in seen[-2:]] == [
        ("snapshot", 8080, "orders"),
        ("snapshot", 8080, "orders"),
    ]
    tracker.handle(close(200, 8080, 1600, ts=999))  # older than the snapshot: already reflected
    assert len(by_pid(tracker.registry)[200].listeners) == 2
    assert tracker.outcomes["superseded"] == 1


def test_snapshot_drops_a_process_that_exits_before_it_is_watched(tracker: Tracker, host: FakeHost) -> None:
    host.start(210)
    taken = Snapshot(taken_ns=1000, sockets=[ListeningSocket(NETNS, socket.AF_INET, "0.0.0.0", 80, 1700, 0)])
    taken.holders = {1700: {210}}

    original_watch = host.watch

    def watch_then_die(pid: int) -> None:
        original_watch(pid)
        host.end(pid)

    host.watch = watch_then_die  # type: ignore[method-assign]
    tracker.load_snapshot(taken)
    assert tracker.registry.snapshot() == []
    assert 210 not in host.watched


def test_subscribers_hear_once_per_publish(tracker: Tracker, host: FakeHost) -> None:
    calls: list[list[ServiceEntry]] = []
    tracker.registry.subscribe(calls.append)
    host.start(10)
    tracker.handle(listen(10, 8080, 501, ts=5))
    tracker.handle(listen(10, 8081, 502, ts=6))
    assert tracker.registry.publish() is True
    assert tracker.registry.publish() is False
    assert len(calls) == 1 and calls[0][0].ports == (8080, 8081)


def test_a_failing_subscriber_does_not_stop_the_others(registry: ServiceRegistry) -> None:
    heard: list[int] = []

    def broken(_entries: list[ServiceEntry]) -> None:
        raise RuntimeError("subscriber bug")

    registry.subscribe(broken)
    unsubscribe = registry.subscribe(lambda entries: heard.append(len(entries)))
    registry.put_process(info(5), 0)
    registry.publish()
    unsubscribe()
    registry.put_process(info(5, ticks=7), 0)
    registry.publish()
    assert heard == [0]
