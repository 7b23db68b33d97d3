"""Shared pieces of the Beyla supervisor tests: a real HTTP service to instrument, settings tuned for
tests (short back-off and grace, configurable like any deployment), and waiting on status."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import yaml

from coral_ebpf.agent.config import parse_config_text
from coral_ebpf.beyla.settings import BeylaSettings
from coral_ebpf.beyla.supervisor import BeylaSupervisor
from coral_ebpf.discovery.identity import IdentityResolver
from coral_ebpf.discovery.model import Listener, ServiceEntry
from coral_ebpf.probes.linux import procfs
from tests.helpers.agent_process import merge
from tests.helpers.processes import free_port
from tests.helpers.timing import eventually, scaled_duration

# The health and shutdown allowances stretch under QEMU/TCG (CORAL_TEST_TIME_SCALE, see
# tests/helpers/timing.py), where the stand-in alone needs seconds to start; the back-off values
# are what the tests assert, so they stay as they are.
FAST: dict[str, Any] = {
    "metrics_interval": "1s",
    "traces_batch_timeout": "200ms",
    "shutdown_timeout": scaled_duration("2s"),
    "debounce": "300ms",
    "restart": {"backoff_initial": "50ms", "backoff_max": "400ms", "healthy_reset": "1s", "max_restarts": 4},
    # Generous health limits (and stretched under TCG): a slow answer on a loaded machine must not
    # turn into a restart.
    "health": {
        "grace": scaled_duration("10s"),
        "interval": scaled_duration("200ms"),
        "timeout": scaled_duration("2s"),
        "failures": 5,
    },
}


def settings_for(state_dir: Path, binary: Path, **beyla: Any) -> BeylaSettings:
    document = {"state_dir": str(state_dir), "beyla": merge({**FAST, "binary": str(binary)}, beyla)}
    return parse_config_text(yaml.safe_dump(document), "test-config.yaml").beyla


@contextlib.contextmanager
def http_service() -> Iterator[ServiceEntry]:
    """A real HTTP server process on a free loopback port, as discovery would report it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        eventually(
            lambda: any(c.laddr.port == port for c in psutil.Process(process.pid).net_connections(kind="tcp")),
            10,
            f"http.server to listen on port {port}",
        )
        info = procfs.inspect(process.pid)
        assert info is not None
        identity = IdentityResolver().resolve(info, (port,))  # `http.server`, from the command line
        yield ServiceEntry(
            pid=process.pid,
            netns=0,
            name=identity.name,
            exe=psutil.Process(process.pid).exe(),
            cmdline=tuple(psutil.Process(process.pid).cmdline()),
            listeners=(Listener(port),),
            identity=identity,
        )
    finally:
        process.kill()
        process.wait()


def wait_for(
    supervisor: BeylaSupervisor, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    return eventually(
        supervisor.status,
        timeout,
        lambda: f"the supervisor's status; history: {supervisor.history()}",
        until=predicate,
    )


def states(supervisor: BeylaSupervisor) -> list[str]:
    return [entry["state"] for entry in supervisor.history()]


def group_gone(pgid: int) -> bool:
    import os

    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def group_dead(pgid: int) -> bool:
    """No live process in the group (a zombie waits for a reaper, which this container's pid 1 may not be)."""
    import os

    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                return False
        except (ProcessLookupError, psutil.Error):
            continue
    return True
