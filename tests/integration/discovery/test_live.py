"""Live discovery on the running kernel: real listeners, in the test's own network namespace.

Every test runs three times: ring buffer with BTF offsets, perf buffer with BTF offsets, and
ring buffer without BTF (netns from /proc, sockets matched by address).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from coral_ebpf.capabilities.btf import VMLINUX_BTF
from coral_ebpf.discovery.component import Discovery
from coral_ebpf.discovery.model import Listener
from coral_ebpf.discovery.settings import DiscoverySettings
from tests.helpers.discovery import ListenerProcess, entries_of, netns_inode_of, ports_of
from tests.helpers.netns import named_netns, run_in_netns
from tests.helpers.timing import eventually
from tests.integration.discovery.conftest import EventLog, record_events

# Its outcome depends on the kernel: the VM suites (make vm-test, make vagrant-test) run it.
pytestmark = pytest.mark.kernel

MODES = [
    pytest.param(("ring_buffer", True), id="ring-btf"),
    pytest.param(("perf_buffer", True), id="perf-btf"),
    pytest.param(("ring_buffer", False), id="ring-no-btf"),
]


@pytest.fixture(scope="module", params=MODES)
def discovery(request: pytest.FixtureRequest, state_dir: Path) -> Iterator[Discovery]:
    mode, use_btf = request.param
    running = Discovery(DiscoverySettings(event_channel=mode), state_dir, btf_path=VMLINUX_BTF if use_btf else None)
    running.start()
    try:
        yield running
    finally:
        running.stop(5.0)


@pytest.fixture
def events(discovery: Discovery) -> Iterator[EventLog]:
    yield from record_events(discovery.registry)


def test_runs_in_the_requested_mode(discovery: Discovery) -> None:
    status = discovery.status()
    assert status["state"] == "running"
    assert status["buffer"] == discovery.settings.event_channel
    assert status["processing_errors"] == 0


def test_loopback_listener_appears_then_disappears(discovery: Discovery, netns: str, events: EventLog) -> None:
    registry = discovery.registry
    with ListenerProcess(netns, env={"OTEL_SERVICE_NAME": "checkout"}) as proc:
        port = proc.listen(4, "127.0.0.1")
        eventually(lambda: port in ports_of(registry, proc.pid), what="the listener in the registry")
        (entry,) = entries_of(registry, proc.pid)
        assert entry.name == "checkout"
        assert entry.netns == netns_inode_of(netns)
        assert entry.exe == os.path.realpath(sys.executable)
        assert entry.cmdline[1].endswith("listener_child.py")
        assert abs(entry.start_time - psutil.Process(proc.pid).create_time()) < 1.0
        assert entry.listeners[0].address == "127.0.0.1" and entry.listeners[0].family == socket.AF_INET

        (listened,) = eventually(lambda: events.of(proc.pid, "listen"), what="the listen event")
        assert (listened.port, listened.netns, listened.service) == (port, netns_inode_of(netns), "checkout")

        proc.close(port)
        eventually(lambda: not entries_of(registry, proc.pid), what="the entry to leave")
        eventually(lambda: events.of(proc.pid, "close"), what="the close event")


def test_accepted_connections_leave_the_listener_alone(discovery: Discovery, netns: str, events: EventLog) -> None:
    """A connection's socket is cloned from the listener (LISTEN -> SYN_RECV): that is not a close."""
    registry = discovery.registry
    with ListenerProcess(netns) as proc:
        port = proc.listen(4, "127.0.0.1")
        eventually(lambda: port in ports_of(registry, proc.pid))

        def connect_three_times() -> None:
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    pass

        run_in_netns(netns, connect_three_times)
        later = proc.listen(4, "127.0.0.1")  # listen events are applied in order: a barrier
        eventually(lambda: later in ports_of(registry, proc.pid))
        assert ports_of(registry, proc.pid) == {port, later}
        assert not events.of(proc.pid, "close")


def test_ipv6_listener(discovery: Discovery, netns: str) -> None:
    registry = discovery.registry
    with ListenerProcess(netns) as proc:
        port4 = proc.listen(4, "127.0.0.1")
        port6 = proc.listen(6, "::1")
        eventually(lambda: {port4, port6} <= ports_of(registry, proc.pid), what="both listeners")
        (entry,) = entries_of(registry, proc.pid)
        assert {(item.family, item.address, item.port) for item in entry.listeners} == {
            (socket.AF_INET, "127.0.0.1", port4),
            (socket.AF_INET6, "::1", port6),
        }
        proc.close(port6)
        eventually(lambda: ports_of(registry, proc.pid) == {port4}, what="the IPv6 listener to leave")


def test_listeners_in_two_namespaces(discovery: Discovery, netns: str) -> None:
    registry = discovery.registry
    with named_netns() as second, ListenerProcess(netns) as first_proc, ListenerProcess(second) as second_proc:
        # The same port number in both namespaces: they are different sockets.
        port = first_proc.listen(4, "127.0.0.1")
        assert second_proc.listen(4, "127.0.0.1", port) == port
        eventually(lambda: entries_of(registry, first_proc.pid) and entries_of(registry, second_proc.pid))
        assert entries_of(registry, first_proc.pid)[0].netns == netns_inode_of(netns)
        assert entries_of(registry, second_proc.pid)[0].netns == netns_inode_of(second)
        second_proc.kill()
        eventually(lambda: not entries_of(registry, second_proc.pid), what="the second namespace's entry to leave")
        assert ports_of(registry, first_proc.pid) == {port}


def test_exec_keeps_the_listener(discovery: Discovery, netns: str, events: EventLog) -> None:
    registry = discovery.registry
    with ListenerProcess(netns) as proc:
        port = proc.listen(4, "127.0.0.1")
        eventually(lambda: port in ports_of(registry, proc.pid))
        proc.exec(["/bin/sleep", "60"])
        eventually(
            lambda: [entry for entry in entries_of(registry, proc.pid) if entry.exe.endswith("/sleep")],
            what="the entry to show the new program",
        )
        (entry,) = entries_of(registry, proc.pid)
        assert (entry.name, entry.ports, entry.cmdline) == ("sleep", (port,), ("/bin/sleep", "60"))
        (execd,) = eventually(lambda: events.of(proc.pid, "exec"))
        assert execd.filename == "/bin/sleep"
        proc.kill()
        eventually(lambda: not entries_of(registry, proc.pid), what="the entry to leave on exit")
        eventually(lambda: events.of(proc.pid, "exit"), what="the exit event")


def test_fork_exec_child_keeps_the_listener_after_the_parent_exits(discovery: Discovery, netns: str) -> None:
    registry = discovery.registry
    with ListenerProcess(netns) as proc:
        port = proc.listen(4, "127.0.0.1")
        eventually(lambda: port in ports_of(registry, proc.pid))
        child = proc.fork_exec(["/bin/sleep", "60"])
        eventually(lambda: port in ports_of(registry, child), what="the child to inherit the listener")
        proc.exit()
        eventually(lambda: not entries_of(registry, proc.pid), what="the parent to leave")
        (entry,) = entries_of(registry, child)
        assert (entry.exe.rsplit("/", 1)[-1], entry.ports) == ("sleep", (port,))
        os.kill(child, 9)
        eventually(lambda: not entries_of(registry, child), what="the child to leave")


def test_short_lived_process(discovery: Discovery, netns: str, events: EventLog) -> None:
    script = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1])"
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    port = int(done.stdout)
    listened = eventually(
        lambda: [item for item in events.items if item.event == "listen" and item.port == port],
        what="the short-lived listener's event",
    )
    pid = listened[0].tgid
    eventually(
        lambda: [item for item in events.items if item.event == "close" and item.port == port],
        what="its close event",
    )
    assert not entries_of(discovery.registry, pid)


def test_pid_reuse(discovery: Discovery, netns: str) -> None:
    registry = discovery.registry
    first = ListenerProcess(netns)
    first_port = first.listen(4, "127.0.0.1")
    eventually(lambda: first_port in ports_of(registry, first.pid))
    first_start = entries_of(registry, first.pid)[0].start_time
    first.kill()
    eventually(lambda: not entries_of(registry, first.pid), what="the first process to leave")
    with ListenerProcess(netns, pid=first.pid, env={"OTEL_SERVICE_NAME": "second"}) as second:
        assert second.pid == first.pid
        second_port = second.listen(4, "127.0.0.1")
        eventually(lambda: second_port in ports_of(registry, second.pid), what="the new process with the same pid")
        (entry,) = entries_of(registry, second.pid)
        assert entry.ports == (second_port,) and entry.name == "second"
        assert entry.start_time >= first_start


def test_port_reuse_by_other_processes(discovery: Discovery, netns: str) -> None:
    registry = discovery.registry
    with ListenerProcess(netns) as first, ListenerProcess(netns) as second, ListenerProcess(netns) as third:
        port = first.listen(4, "127.0.0.1", reuseport=True)
        second.listen(4, "127.0.0.1", port, reuseport=True)
        eventually(lambda: port in ports_of(registry, first.pid) and port in ports_of(registry, second.pid))
        first.close(port)
        eventually(lambda: not entries_of(registry, first.pid), what="the first SO_REUSEPORT listener to leave")
        assert ports_of(registry, second.pid) == {port}
        second.close(port)
        eventually(lambda: not entries_of(registry, second.pid))
        third.listen(4, "127.0.0.1", port)
        eventually(lambda: port in ports_of(registry, third.pid), what="the port under a new owner")


def test_listen_without_bind_reports_the_kernel_chosen_port(discovery: Discovery, netns: str) -> None:
    registry = discovery.registry
    with ListenerProcess(netns) as proc:
        port = proc.autolisten(4)
        eventually(lambda: port in ports_of(registry, proc.pid), what="the autobound port")
        assert Listener(port=port, family=socket.AF_INET, address="0.0.0.0") in [
            Listener(item.port, item.family, item.address) for item in entries_of(registry, proc.pid)[0].listeners
        ]


def test_status_reports_events_and_probe_run_time(discovery: Discovery, netns: str) -> None:
    with ListenerProcess(netns) as proc:
        port = proc.listen(4, "127.0.0.1")
        eventually(lambda: port in ports_of(discovery.registry, proc.pid))
        proc.close(port)
        eventually(lambda: not entries_of(discovery.registry, proc.pid))
    status = discovery.status()
    assert status["events"]["listen"] >= 1 and status["events"]["close"] >= 1
    assert status["bpf_stats"] == "bpf_enable_stats"
    probe = status["probes"]["sock:inet_sock_set_state"]
    assert probe["run_cnt"] > 0 and probe["run_time_ns"] > 0
    assert set(status["probes"]) == {
        "sched:sched_process_exec",
        "sched:sched_process_exit",
        "task:task_newtask",
        "sock:inet_sock_set_state",
    }
    assert status["lost"] == {"proc_events": 0, "listen_events": 0}
