"""Discovery started and stopped per test: the snapshot path, exclusions, forced event loss."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from coral_ebpf.discovery.component import Discovery
from coral_ebpf.discovery.settings import DiscoverySettings
from coral_ebpf.discovery.snapshot import take_snapshot
from coral_ebpf.probes import program, runtime
from coral_ebpf.probes.runtime import BpfCompileError
from tests.helpers.discovery import ListenerProcess, entries_of, netns_inode_of, ports_of
from tests.helpers.netns import named_netns, run_in_netns
from tests.helpers.timing import eventually
from tests.integration.discovery.conftest import EventLog

STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")

# Its outcome depends on the kernel: the VM suites (make vm-test, make vagrant-test) run it.
pytestmark = pytest.mark.kernel


def test_snapshot_alone_finds_listeners_opened_before_start(state_dir: Path, netns: str) -> None:
    stats_before = STATS_SYSCTL.read_text()
    with (
        named_netns() as other,
        ListenerProcess(netns, env={"SERVICE_NAME": "legacy"}) as first,
        ListenerProcess(other) as second,
    ):
        port4 = first.listen(4, "127.0.0.1")
        port6 = first.listen(6, "::1")
        other_port = second.listen(4, "127.0.0.1")
        worker = first.fork()  # a pre-fork worker sharing both sockets
        discovery = Discovery(DiscoverySettings(), state_dir)
        discovery.start()
        try:
            registry = discovery.registry
            # No waiting: start() returns with the snapshot loaded.
            (entry,) = entries_of(registry, first.pid)
            assert (entry.name, set(entry.ports), entry.netns) == ("legacy", {port4, port6}, netns_inode_of(netns))
            assert ports_of(registry, worker) == {port4, port6}
            (other_entry,) = entries_of(registry, second.pid)
            assert (other_entry.ports, other_entry.netns) == ((other_port,), netns_inode_of(other))
            status = discovery.status()
            assert status["snapshot"]["namespaces"] >= 2 and status["snapshot"]["errors"] == []
            assert STATS_SYSCTL.read_text() == stats_before  # statistics are on through a BPF fd, not the sysctl
        finally:
            discovery.stop(5.0)
    assert STATS_SYSCTL.read_text() == stats_before


def test_snapshot_reads_a_namespace_no_process_lives_in() -> None:
    """A socket made in an `ip netns` namespace by a thread that then left it is still found."""
    with named_netns() as name:

        def make_listener() -> socket.socket:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            return sock

        sock = run_in_netns(name, make_listener)
        try:
            taken = take_snapshot(only_netns=[netns_inode_of(name)])
            (found,) = taken.sockets
            assert (found.port, found.inode) == (sock.getsockname()[1], os.fstat(sock.fileno()).st_ino)
            assert taken.holders[found.inode] == {os.getpid()}
        finally:
            sock.close()


def test_exclusions(state_dir: Path, netns: str, tmp_path: Path) -> None:
    beyla = tmp_path / "beyla"
    sleepy = tmp_path / "sleepy-worker"
    shutil.copy("/bin/sleep", beyla)
    shutil.copy("/bin/sleep", sleepy)
    settings = DiscoverySettings(exclude=("*-sidecar", f"{tmp_path}/sleepy*"))
    with (
        ListenerProcess(netns, env={"OTEL_SERVICE_NAME": "mesh-sidecar"}) as sidecar,
        ListenerProcess(netns) as kept,
        ListenerProcess(netns) as becomes_beyla,
        ListenerProcess(netns) as becomes_sleepy,
    ):
        sidecar.listen(4, "127.0.0.1")  # before start: the snapshot path
        discovery = Discovery(settings, state_dir)
        discovery.start()
        own = socket.socket()
        log = EventLog()
        registry = discovery.registry
        registry.subscribe_events(log)
        try:
            sidecar.listen(6, "::1")  # after start: the event path
            own.bind(("127.0.0.1", 0))
            own.listen()  # the agent itself
            ports = {proc.pid: proc.listen(4, "127.0.0.1") for proc in (becomes_beyla, becomes_sleepy)}
            eventually(lambda: all(port in ports_of(registry, pid) for pid, port in ports.items()))
            kept_port = kept.listen(4, "127.0.0.1")
            eventually(lambda: kept_port in ports_of(registry, kept.pid))
            # Listen events are applied in order, so the earlier ones were seen and left out.
            assert not entries_of(registry, sidecar.pid) and not entries_of(registry, os.getpid())
            assert not log.of(sidecar.pid) and not log.of(os.getpid())
            becomes_beyla.exec([str(beyla), "60"])
            becomes_sleepy.exec([str(sleepy), "60"])
            eventually(
                lambda: not entries_of(registry, becomes_beyla.pid) and not entries_of(registry, becomes_sleepy.pid),
                what="the processes that became beyla and sleepy-worker to go",
            )
            assert ports_of(registry, kept.pid) == {kept_port}
            assert discovery.status()["outcomes"]["excluded"] >= 4
        finally:
            own.close()
            discovery.stop(5.0)


BURST = """
import json, socket, sys

opened = []
for _ in range(300):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    opened.append(sock)
for sock in opened[50:]:
    sock.close()
print(json.dumps([sock.getsockname()[1] for sock in opened[:50]]), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("mode", ["ring_buffer", "perf_buffer"])
def test_kernel_event_loss_triggers_a_resync(state_dir: Path, netns: str, mode: str) -> None:
    """One-page buffers and a paused reader: the kernel really drops events, and discovery recovers."""
    discovery = Discovery(DiscoverySettings(event_channel=mode, event_channel_size=4096), state_dir)
    discovery.start()
    burst: subprocess.Popen[str] | None = None
    try:
        assert discovery.pause_readers()
        burst = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", BURST],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert burst.stdout is not None
        kept = set(json.loads(burst.stdout.readline()))
        discovery.resume_readers()
        eventually(lambda: discovery.status()["resyncs"] >= 1, what="a re-sync after the loss")
        status = discovery.status()
        assert status["lost"]["listen_events"] > 0
        assert "lost by listen_events" in status["last_resync_reason"]
        pid = burst.pid
        eventually(lambda: ports_of(discovery.registry, pid) == kept, what="the registry to match the kernel")
    finally:
        if burst is not None:
            burst.kill()
            burst.wait()
        discovery.stop(5.0)


def _refuse_ring_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """This kernel has ring buffers; make their load fail as it does on kernels before 5.8."""
    real_load = runtime.load_program  # what discovery calls, before the patch

    def load(name: str, state_dir: Path, defines: Mapping[str, int | str] | None = None) -> Any:
        if defines and defines.get("CHANNEL_RINGBUF") == 1:
            raise BpfCompileError(f"BPF program {name!r} failed to load: map type RINGBUF unsupported (simulated)")
        return real_load(name, state_dir, defines=defines)

    monkeypatch.setattr(program, "load_program", load)


def test_auto_falls_back_to_perf_buffers(state_dir: Path, netns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_ring_buffers(monkeypatch)
    discovery = Discovery(DiscoverySettings(event_channel="auto"), state_dir)
    discovery.start()
    try:
        status = discovery.status()
        assert status["buffer"] == "perf_buffer" and "RINGBUF unsupported" in status["ring_buffer_error"]
        with ListenerProcess(netns) as proc:
            port = proc.listen(4, "127.0.0.1")
            eventually(lambda: port in ports_of(discovery.registry, proc.pid))
    finally:
        discovery.stop(5.0)


def test_an_explicit_ring_buffer_does_not_fall_back(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_ring_buffers(monkeypatch)
    discovery = Discovery(DiscoverySettings(event_channel="ring_buffer"), state_dir)
    with pytest.raises(BpfCompileError, match="RINGBUF"):
        discovery.start()
    assert discovery.state == "failed"
    discovery.stop(1.0)
