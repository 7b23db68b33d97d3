"""Beyla's process: clean stop with no orphan, SIGKILL after a hung SIGTERM, death with the agent,
a Beyla left behind by a dead agent, and the memory guard."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from coral_ebpf.beyla import memory
from coral_ebpf.beyla.supervisor import BeylaSupervisor
from coral_ebpf.discovery.model import ServiceEntry
from tests.beyla_standin import REPO, install_standin, runs, signals_ready
from tests.helpers.processes import free_port
from tests.helpers.timing import eventually, scaled
from tests.integration.beyla_support import (
    group_dead,
    group_gone,
    http_service,
    settings_for,
    wait_for,
)


@pytest.fixture
def service() -> Iterator[ServiceEntry]:
    with http_service() as entry:
        yield entry


def make(tmp_path: Path, service: ServiceEntry, control: dict[str, Any] | None = None, **beyla: Any) -> BeylaSupervisor:
    binary = install_standin(tmp_path / "bin", control or {})
    return BeylaSupervisor(
        settings_for(tmp_path / "state", binary, **beyla), otlp_endpoint="http://127.0.0.1:9", services=[service]
    )


def test_stop_terminates_the_process_group_and_leaves_nothing(tmp_path: Path, service: ServiceEntry) -> None:
    supervisor = make(tmp_path, service)
    supervisor.start()
    status = wait_for(supervisor, lambda s: s["state"] == "running")
    pgid = status["pid"]
    supervisor.stop(15)
    assert group_gone(pgid)
    final = supervisor.status()
    assert final["state"] == "stopped" and final["pid"] is None
    assert final["last_stop"]["sigkill"] is False and final["last_exit_code"] == 0
    assert not (tmp_path / "state" / "beyla" / "beyla.pid").exists()


def test_a_hung_sigterm_is_followed_by_sigkill(tmp_path: Path, service: ServiceEntry) -> None:
    supervisor = make(tmp_path, service, {"hang_on_sigterm": True}, shutdown_timeout="1s")
    supervisor.start()
    pgid = wait_for(supervisor, lambda s: s["state"] == "running")["pid"]
    supervisor.stop(30)
    assert group_gone(pgid)
    final = supervisor.status()
    assert final["last_stop"]["sigkill"] is True and final["last_exit_code"] == -signal.SIGKILL


AGENT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from coral_ebpf.beyla.supervisor import BeylaSupervisor
    from coral_ebpf.discovery.model import Listener, ServiceEntry
    from tests.integration.beyla_support import settings_for
    settings = settings_for(Path({state!r}), Path({binary!r}), shutdown_timeout="1s")
    service = ServiceEntry(pid={pid}, netns=0, name="app", exe={exe!r}, cmdline=(), listeners=(Listener({port}),))
    BeylaSupervisor(settings, otlp_endpoint="http://127.0.0.1:9", services=[service]).start()
    time.sleep(600)
    """
)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Agents a test starts. Afterwards, whatever the outcome, each agent and every stand-in still
    running from this test's bin directory is SIGKILLed, so a failure leaves no process behind."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for agent in started:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    for run in runs(tmp_path / "bin"):
        pid = int(run["pid"])
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            process = psutil.Process(pid)
            # The pid must still be this test's stand-in (its own group leader), not a reused pid.
            if str(tmp_path / "bin") in " ".join(process.cmdline()) and os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)


def describe(pid: int) -> str:
    """What a process is doing, for a failure message (py-spy dump --pid gives its Python stack)."""
    try:
        process = psutil.Process(pid)
        wchan = Path(f"/proc/{pid}/wchan").read_text(encoding="ascii", errors="replace")
        return f"pid {pid}: {process.status()}, {process.num_threads()} threads, wchan {wchan}, {process.cmdline()}"
    except (psutil.Error, OSError) as exc:
        return f"pid {pid}: {exc}"


def start_agent(
    tmp_path: Path, service: ServiceEntry, control: dict[str, Any], agents: list[subprocess.Popen[bytes]]
) -> tuple[subprocess.Popen[bytes], int]:
    binary = install_standin(tmp_path / "bin", control)
    code = AGENT.format(
        repo=str(REPO),
        state=str(tmp_path / "state"),
        binary=str(binary),
        pid=service.pid,
        exe=service.exe,
        port=service.ports[0],
    )
    agent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agents.append(agent)
    eventually(lambda: len(runs(binary.parent)) >= 2, 30, what="the agent's Beyla to start")
    beyla_pid = int(runs(binary.parent)[-1]["pid"])
    eventually(lambda: beyla_pid in signals_ready(binary.parent), 30, what="the agent's Beyla to set up its signals")
    return agent, beyla_pid


def test_beyla_dies_with_the_agent(
    tmp_path: Path, service: ServiceEntry, agents: list[subprocess.Popen[bytes]]
) -> None:
    agent, beyla_pid = start_agent(tmp_path, service, {}, agents)
    agent.kill()  # SIGKILL: the agent gets no chance to stop Beyla
    agent.wait()
    # Each agent thread that exits re-parents Beyla and sends it the parent-death SIGTERM again:
    # the stand-in gets a burst of them, at any point of its start-up. It then stops within its
    # shutdown_timeout (1s here); eventually's 30 s stretch with CORAL_TEST_TIME_SCALE.
    try:
        eventually(lambda: group_dead(beyla_pid), 30, what="Beyla to stop on its parent-death signal")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {describe(beyla_pid)}") from None


STANDIN_CONFIG = """
shutdown_timeout: 1s
otel_metrics_export: {{endpoint: "http://127.0.0.1:9", interval: 1s}}
otel_traces_export: {{endpoint: "http://127.0.0.1:9", batch_timeout: 200ms}}
discovery: {{instrument: [{{open_ports: "{port}"}}]}}
health_check: {{port: {health_port}, listen_address: 127.0.0.1}}
"""


def test_a_burst_of_sigterms_during_start_up_ends_beyla_with_status_0(tmp_path: Path, service: ServiceEntry) -> None:
    """How the agent's death looks to Beyla: SIGTERM after SIGTERM (one per exiting agent thread),
    while it is still starting up. The stand-in's handler, run again for a SIGTERM that arrived
    while it held the lock of a threading.Event, once waited on that lock for good (with more
    SIGTERMs it nested deeper, until a RecursionError)."""
    binary = install_standin(tmp_path / "bin", {})
    config = tmp_path / "beyla.yaml"
    config.write_text(STANDIN_CONFIG.format(port=service.ports[0], health_port=free_port()), encoding="utf-8")
    with (tmp_path / "stderr").open("wb") as stderr:
        beyla = subprocess.Popen(
            [str(binary), "-config", str(config)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:

        def ready() -> bool:
            assert beyla.poll() is None, f"the stand-in exited with {beyla.returncode}"
            return beyla.pid in signals_ready(binary.parent)

        # Polled every millisecond: the burst must come while the stand-in is still busy starting.
        eventually(ready, 30, "the stand-in to set up its signals", interval=0.001)
        until = time.monotonic() + 1.0
        while time.monotonic() < until:  # not yet reaped, so the pid is still the stand-in's
            os.kill(beyla.pid, signal.SIGTERM)
        try:
            status = beyla.wait(timeout=scaled(30))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the stand-in did not stop: {describe(beyla.pid)}") from None
        assert status == 0, (tmp_path / "stderr").read_text(encoding="utf-8", errors="replace")[-3000:]
    finally:
        if beyla.poll() is None:
            beyla.kill()
            beyla.wait()


def test_a_beyla_left_by_a_dead_agent_is_stopped_before_a_new_one_starts(
    tmp_path: Path, service: ServiceEntry, agents: list[subprocess.Popen[bytes]]
) -> None:
    agent, stale_pid = start_agent(tmp_path, service, {"hang_on_sigterm": True}, agents)
    agent.kill()
    agent.wait()
    assert psutil.pid_exists(stale_pid)  # it ignored the parent-death SIGTERM
    pid_file = json.loads((tmp_path / "state" / "beyla" / "beyla.pid").read_text())
    assert pid_file["pid"] == stale_pid
    supervisor = BeylaSupervisor(
        settings_for(tmp_path / "state", tmp_path / "bin" / "beyla", shutdown_timeout="100ms"),
        otlp_endpoint="http://127.0.0.1:9",
        services=[service],
    )
    try:
        supervisor.start()
        assert group_dead(stale_pid)
        assert wait_for(supervisor, lambda s: s["state"] == "running")["pid"] != stale_pid
    finally:
        supervisor.stop(15)


def test_memory_max_puts_beyla_in_a_memory_cgroup_or_under_rlimit_as(tmp_path: Path, service: ServiceEntry) -> None:
    limit = 1024 * 1024 * 1024
    supervisor = make(tmp_path, service, limits={"memory_max": "1GiB"})
    supervisor.start()
    status = wait_for(supervisor, lambda s: s["state"] == "running")
    guard = status["memory_guard"]
    run = runs(tmp_path / "bin")[-1]
    try:
        assert guard["limit_bytes"] == limit
        if guard["method"] in ("cgroup1", "cgroup2"):
            cgroup = Path(guard["cgroup"])
            assert cgroup.name in run["cgroup"]
            limit_file = "memory.max" if guard["method"] == "cgroup2" else "memory.limit_in_bytes"
            assert int((cgroup / limit_file).read_text()) == limit
        else:
            assert guard["method"] == "rlimit_as" and run["rlimit_as"] == limit
    finally:
        supervisor.stop(15)
    if guard["method"] != "rlimit_as":
        assert not Path(guard["cgroup"]).exists()  # removed with Beyla


def test_without_a_writable_cgroup_the_limit_is_rlimit_as(
    tmp_path: Path, service: ServiceEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path / "no-cgroups")
    supervisor = make(tmp_path, service, limits={"memory_max": "2GiB"})
    supervisor.start()
    try:
        status = wait_for(supervisor, lambda s: s["state"] == "running")
        assert status["memory_guard"]["method"] == "rlimit_as"
        assert runs(tmp_path / "bin")[-1]["rlimit_as"] == 2 * 1024**3
    finally:
        supervisor.stop(15)


def test_no_cgroup_is_left_after_many_restarts(tmp_path: Path, service: ServiceEntry) -> None:
    supervisor = make(tmp_path, service, {"crash": {"times": 3}}, limits={"memory_max": "1GiB"})
    supervisor.start()
    status = wait_for(supervisor, lambda s: s["state"] == "running" and s["restarts"] == 2)
    supervisor.stop(15)
    if status["memory_guard"]["method"] in ("cgroup1", "cgroup2"):
        parent = Path(status["memory_guard"]["cgroup"]).parent
        assert not [p for p in parent.iterdir() if p.name.startswith(f"coral-ebpf-beyla-{os.getpid()}")]
