"""CPU the agent spends supervising a running Beyla (log readers, /healthz probes, the state loop).

Runs the supervisor with the test stand-in (no real Beyla here) at the default settings, in a
private network namespace, and measures this process's CPU time over a quiet window. Needs root.
Run: sudo .venv/bin/python bench/beyla_supervision_cost.py   (last line: the figure)
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coral_ebpf.beyla.supervisor import BeylaSupervisor  # noqa: E402
from tests.beyla_standin import install_standin  # noqa: E402
from tests.helpers.netns import enter_private_netns  # noqa: E402
from tests.integration.beyla_support import http_service, settings_for, wait_for  # noqa: E402

WINDOW = 30.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    enter_private_netns()
    with tempfile.TemporaryDirectory() as scratch, http_service() as service:
        directory = Path(scratch)
        binary = install_standin(directory / "bin", {"export": False})
        settings = settings_for(
            directory / "state",
            binary,
            health={"grace": "20s", "interval": "10s", "timeout": "5s", "failures": 5},  # the defaults
        )
        supervisor = BeylaSupervisor(settings, otlp_endpoint="http://127.0.0.1:9", services=[service])
        supervisor.start()
        try:
            wait_for(supervisor, lambda s: s["state"] == "running", timeout=60)
            time.sleep(2.0)
            before, started = cpu_seconds(), time.monotonic()
            time.sleep(WINDOW)
            spent, elapsed = cpu_seconds() - before, time.monotonic() - started
        finally:
            supervisor.stop(15)
    print(f"window={elapsed:.1f}s agent_cpu={spent * 1000:.1f}ms (health interval 10s; 2 shared cores; indicative)")
    print(f"beyla supervision cost: {spent / elapsed * 100:.3f}% of one core")


if __name__ == "__main__":
    main()
