"""How long the real Beyla takes to deliver data through the whole agent, and what it costs in memory.

From `coral-ebpf start` to the first request of a service (a Python HTTP server, started just
before the agent, hit every 100 ms from the moment the agent starts) appearing in
`coral-ebpf query http`; on the way, when the control socket first answers and when Beyla is
`running` (its tracer is live). Then Beyla's RSS (status `rss_bytes`) while it instruments that
service.

Needs root, a real Beyla ($CORAL_TEST_BEYLA or $CORAL_EBPF_BEYLA_BIN) and a kernel with kprobes: the
development machines have none, so run it in a VM-matrix guest:
    CORAL_TEST_BEYLA=/path/to/beyla make vm-bench-beyla     (Debian 6.12 under QEMU)
On a kernel without kprobes or without a Beyla it says so and prints `beyla first data: skipped`.
It runs in a private network namespace (Beyla contacts cloud metadata addresses at start).
Last line: `beyla first data: <s> s`.
"""

from __future__ import annotations

import http.client
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.agent_process import AgentProcess  # noqa: E402
from tests.helpers.kernel_truth import beyla_application_possible  # noqa: E402
from tests.helpers.netns import enter_private_netns  # noqa: E402
from tests.helpers.red_support import server  # noqa: E402

SERVICE = "bench-first-data"
TIMEOUT = 900.0  # seconds: Beyla alone takes 20-40 s to start under TCG


def binary() -> str | None:
    return os.environ.get("CORAL_TEST_BEYLA") or os.environ.get("CORAL_EBPF_BEYLA_BIN")


def hammer(port: int, stop: threading.Event) -> None:
    """One request every 100 ms until stopped (a new connection each time: no stale keep-alive)."""
    while not stop.is_set():
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/bench/first")
            connection.getresponse().read()
            connection.close()
        except OSError:
            pass
        stop.wait(0.1)


def first_rows(agent: AgentProcess) -> bool:
    result = agent.cli("query", "http", "--service", SERVICE, "--since", "1h", "--json")
    return result.returncode == 0 and '"requests"' in result.stdout


def main() -> None:
    beyla = binary()
    possible = beyla_application_possible()
    if os.geteuid() != 0 or beyla is None or possible is not True:
        if os.geteuid() != 0:
            why = "needs root"
        elif beyla is None:
            why = "no Beyla named ($CORAL_TEST_BEYLA or $CORAL_EBPF_BEYLA_BIN)"
        else:
            detail = possible if isinstance(possible, str) else "no kprobes, BTF or kernel >= 5.8"
            why = f"this kernel cannot run Beyla's application mode ({detail}); use make vm-bench-beyla"
        print(f"skipped: {why}")
        print("beyla first data: skipped")
        return
    enter_private_netns()
    config = {
        "beyla": {"binary": beyla, "metrics_interval": "1s", "traces_batch_timeout": "200ms"},
        "red": {"engine": "beyla"},
        "storage": {"flush_interval": "200ms"},
    }
    with tempfile.TemporaryDirectory(prefix="coral-bench-beyla-") as scratch, server("python", SERVICE) as app:
        agent = AgentProcess(Path(scratch) / "agent", config)
        stop = threading.Event()
        marks: dict[str, float] = {}
        started = time.monotonic()
        agent.launch()
        client = threading.Thread(target=hammer, args=(app.port, stop), daemon=True)
        client.start()
        try:
            while time.monotonic() - started < TIMEOUT:
                try:
                    state = agent.status()["beyla"]["state"]
                except Exception:  # the socket does not answer yet
                    time.sleep(0.2)
                    continue
                marks.setdefault("control socket", time.monotonic() - started)
                if state == "running":
                    marks.setdefault("beyla running", time.monotonic() - started)
                    if first_rows(agent):
                        marks["first data"] = time.monotonic() - started
                        break
                time.sleep(0.5)
            else:
                raise SystemExit(f"no data from Beyla within {TIMEOUT:.0f} s\n{agent.log_tail(60)}")
            rss = agent.status()["beyla"]["rss_bytes"] or 0
        finally:
            stop.set()
            client.join(15)
            agent.stop()
    kernel = os.uname().release
    print(
        f"kernel {kernel}: control socket {marks['control socket']:.1f} s, beyla running "
        f"{marks['beyla running']:.1f} s, first request in query http {marks['first data']:.1f} s after start; "
        f"beyla rss {rss / 1e6:.0f} MB"
    )
    print(f"beyla rss: {rss / 1e6:.0f} MB")
    print(f"beyla first data: {marks['first data']:.1f} s")


if __name__ == "__main__":
    main()
