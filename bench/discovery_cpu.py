"""Discovery's CPU cost: idle with probes attached, and under process churn.

Three windows, each `--seconds` long, with discovery running in this process as in the agent:
- idle: nothing happens on purpose (other processes on the host still run);
- churn: a child starts 100 short processes per second (fork + exec /bin/true + exit). They do
  not listen, so the probes drop their events in the kernel after one hash lookup;
- listener churn: 100 short processes per second that each listen on a port, exec /bin/true
  (keeping the socket) and exit: every one reaches user space (listen, exec, exit, close).

Reported per window: this process's CPU (user + system, % of one core) and the probes' own
run time in the kernel (charged to the processes that trigger them). Needs root. The last
line is the figure.

    sudo .venv/bin/python bench/discovery_cpu.py [--seconds 10] [--rate 100]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from coral_ebpf.discovery.component import Discovery
from coral_ebpf.discovery.settings import DiscoverySettings

CHURN = """
import os, socket, sys, time
rate, seconds, listen = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "listen"
interval = 1.0 / rate
start = time.monotonic()
count = 0
while time.monotonic() - start < seconds:
    if listen:
        child = os.fork()
        if child == 0:
            sock = socket.socket()
            sock.set_inheritable(True)
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            os.execv("/bin/true", ["true"])
    else:
        os.posix_spawn("/bin/true", ["true"], os.environ)
    count += 1
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    delay = start + count * interval - time.monotonic()
    if delay > 0:
        time.sleep(delay)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
print(count, flush=True)
"""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def probe_totals(status: dict[str, Any]) -> tuple[int, int]:
    probes = status["probes"].values()
    return sum(int(p["run_time_ns"]) for p in probes), sum(int(p["run_cnt"]) for p in probes)


def window(discovery: Discovery, seconds: float, churn: list[str] | None) -> dict[str, float]:
    before_status = discovery.status()
    before_cpu, before_wall = cpu_seconds(), time.monotonic()
    started = 0
    if churn is None:
        time.sleep(seconds)
    else:
        done = subprocess.run(churn, capture_output=True, text=True, check=True)
        started = int(done.stdout.strip() or 0)
        time.sleep(0.5)  # let discovery finish the tail of the burst inside this window
    wall = time.monotonic() - before_wall
    cpu = cpu_seconds() - before_cpu
    after_status = discovery.status()
    run_ns = probe_totals(after_status)[0] - probe_totals(before_status)[0]
    runs = probe_totals(after_status)[1] - probe_totals(before_status)[1]
    return {
        "agent_cpu_pct": 100.0 * cpu / wall,
        "probe_cpu_pct": 100.0 * run_ns / 1e9 / wall,
        "probe_runs": runs,
        "probe_ns_per_run": run_ns / runs if runs else 0.0,
        "processes": started,
        "wall": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="processes started per second in the churn windows")
    parser.add_argument("--buffer", default="auto", choices=("auto", "ring_buffer", "perf_buffer"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("discovery_cpu: needs root (BPF); run with sudo", file=sys.stderr)
        return 1
    state_dir = Path(os.environ.get("CORAL_EBPF_BENCH_STATE", tempfile.gettempdir())) / "coral-ebpf-bench-state"
    state_dir.mkdir(mode=0o700, exist_ok=True)
    discovery = Discovery(DiscoverySettings(event_channel=args.buffer), state_dir)
    discovery.start()
    churn = [sys.executable, "-c", CHURN, str(args.rate), str(args.seconds)]
    try:
        time.sleep(1.0)  # start-up work (snapshot, first events) stays out of the idle window
        results = {
            "idle": window(discovery, args.seconds, None),
            "churn": window(discovery, args.seconds, [*churn, "plain"]),
            "listener-churn": window(discovery, args.seconds, [*churn, "listen"]),
        }
        status = discovery.status()
    finally:
        discovery.stop(5.0)
    print(f"buffer: {status['buffer']}; events seen: {status['events']}; lost: {status['lost']}")
    for name, result in results.items():
        rate = result["processes"] / result["wall"]
        print(
            f"{name:>15}: agent {result['agent_cpu_pct']:.2f}% of a core; probes in kernel "
            f"{result['probe_cpu_pct']:.3f}% ({result['probe_runs']} runs, {result['probe_ns_per_run']:.0f} ns/run); "
            f"{rate:.0f} processes/s"
        )
    print(
        f"discovery cpu: idle {results['idle']['agent_cpu_pct']:.2f}% churn {results['churn']['agent_cpu_pct']:.2f}% "
        f"listener-churn {results['listener-churn']['agent_cpu_pct']:.2f}%"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
