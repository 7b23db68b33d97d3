"""Discovery latency: from a process's listen() returning to the listener reaching the registry.

A child process opens 200 listeners on 127.0.0.1, one every 20 ms, and stamps each with
CLOCK_MONOTONIC right after listen() returns. This process runs discovery (as the agent does)
and stamps, with the same clock, the moment each port first appears in a registry change
notification. Needs root. The last line is the figure.

    sudo .venv/bin/python bench/discovery_latency.py [--listeners 200] [--interval 0.02]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from coral_ebpf.discovery.component import Discovery
from coral_ebpf.discovery.model import ServiceEntry
from coral_ebpf.discovery.settings import DiscoverySettings

LISTENER = """
import socket, sys, time
count, interval = int(sys.argv[1]), float(sys.argv[2])
sys.stdin.readline()  # go
held = []
for _ in range(count):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    stamp = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    held.append(sock)
    print(sock.getsockname()[1], stamp, flush=True)
    time.sleep(interval)
print("done", flush=True)
sys.stdin.readline()
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between listen() calls")
    parser.add_argument("--buffer", default="auto", choices=("auto", "ring_buffer", "perf_buffer"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("discovery_latency: needs root (BPF); run with sudo", file=sys.stderr)
        return 1

    state_dir = Path(os.environ.get("CORAL_EBPF_BENCH_STATE", tempfile.gettempdir())) / "coral-ebpf-bench-state"
    state_dir.mkdir(mode=0o700, exist_ok=True)
    discovery = Discovery(DiscoverySettings(event_channel=args.buffer), state_dir)
    child = subprocess.Popen(
        [sys.executable, "-c", LISTENER, str(args.listeners), str(args.interval)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    seen: dict[int, int] = {}
    lock = threading.Lock()

    def on_change(entries: list[ServiceEntry]) -> None:
        now = time.monotonic_ns()
        with lock:
            for entry in entries:
                if entry.pid == child.pid:
                    for port in entry.ports:
                        seen.setdefault(port, now)

    discovery.registry.subscribe(on_change)
    discovery.start()
    listened: dict[int, int] = {}
    try:
        child.stdin.write("go\n")
        child.stdin.flush()
        for line in child.stdout:
            if line.startswith("done"):
                break
            port, stamp = line.split()
            listened[int(port)] = int(stamp)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if listened.keys() <= seen.keys():
                    break
            time.sleep(0.05)
        status = discovery.status()
    finally:
        child.stdin.close()
        child.kill()
        child.wait()
        discovery.stop(5.0)

    with lock:
        latencies = [(seen[port] - stamp) / 1e6 for port, stamp in listened.items() if port in seen]
    missing = len(listened) - len(latencies)
    print(f"buffer: {status['buffer']}; kernel layout: {status['kernel_layout']}")
    print(f"listeners: {len(listened)}, seen: {len(latencies)}, missing: {missing}, lost events: {status['lost']}")
    if not latencies:
        print("discovery p99: n/a ms (no listener reached the registry)")
        return 1
    print(
        f"latency ms: p50 {statistics.median(latencies):.2f}  p90 {percentile(latencies, 0.9):.2f}  "
        f"p99 {percentile(latencies, 0.99):.2f}  max {max(latencies):.2f}"
    )
    print(f"discovery p99: {percentile(latencies, 0.99):.2f} ms")
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
