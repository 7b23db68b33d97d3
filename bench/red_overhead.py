"""Overhead of the built-in RED engine on a traced HTTP server.

A uvicorn server (tests/helpers/red_apps.py) on loopback in a private network namespace is driven
by `wrk` (Debian package; installed here if missing) for a fixed time, alternately without the
engine (no BPF program loaded) and with it tracing the server (probe + user-space engine
exporting to an in-memory consumer; loaded afresh for each run).
Prints throughput and p99 latency of each run, then the medians, and last
`overhead: <pct> %` = the drop in median throughput. Needs root.

    .venv/bin/python bench/red_overhead.py [--duration 10] [--rounds 4] [--connections 16] [--server uvicorn]
                                           [--no-traces]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from coral_ebpf.red.engine import RedEngine  # noqa: E402
from coral_ebpf.red.settings import RedSettings  # noqa: E402
from tests.helpers.consumertest import SerializedCountingSink  # noqa: E402
from tests.helpers.netns import enter_private_netns  # noqa: E402
from tests.helpers.red_support import server  # noqa: E402


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: installing the Debian package (apt-get install wrk)", flush=True)
    result = subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
    found = shutil.which("wrk")
    if not found:
        sys.exit("bench/red_overhead.py needs wrk: apt-get install wrk (Debian), then run again")
    return found


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def run_wrk(wrk: str, port: int, duration: int, connections: int) -> tuple[float, float]:
    """(requests per second, p99 latency in ms)."""
    output = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", f"http://127.0.0.1:{port}/users/42"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    assert p99 is not None, output
    return rps, float(p99.group(1)) * _UNITS[p99.group(2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument(
        "--rounds", type=int, default=4, help="pairs of runs (without, with); the medians damp one-off noise"
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--server", choices=["uvicorn", "python"], default="uvicorn")
    parser.add_argument("--no-traces", action="store_true", help="metrics only (red.traces: false)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/red_overhead.py needs root (BPF and a private network namespace)")
    wrk = ensure_wrk()
    enter_private_netns()
    state_dir = Path(tempfile.mkdtemp(prefix="coral-red-bench-"))
    consumer = SerializedCountingSink()  # stands in for storage and does no work of its own (see bench/ingest.py)
    results: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
    settings = RedSettings(engine="bcc", export_interval=2.0, traces=not args.no_traces)
    events_lost = dropped_spans = exported_spans = 0
    with server(args.server) as proc:
        run_wrk(wrk, proc.port, 2, args.connections)  # warm-up
        for _ in range(args.rounds):
            for mode in ("without", "with"):
                # "without" has no BPF program loaded at all: an attached program that filters the
                # server out still runs on every syscall of the server and of wrk.
                engine = RedEngine(settings, consumer, state_dir) if mode == "with" else None
                try:
                    if engine is not None:
                        engine.start()
                        engine.set_targets([proc.entry()])
                    time.sleep(0.5)
                    rps, p99 = run_wrk(wrk, proc.port, args.duration, args.connections)
                    if engine is not None:
                        engine.flush()
                        events_lost += engine.status().get("kernel", {}).get("events_lost", 0)
                finally:
                    if engine is not None:
                        engine.stop(10)
                        status = engine.status()  # after stop: its last export is counted too
                        dropped_spans += status["dropped_spans"]
                        exported_spans += status["exported_spans"]
                results[mode].append((rps, p99))
                print(f"{mode:>7} probe: {rps:10.1f} req/s  p99 {p99:8.2f} ms", flush=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    base_rps = statistics.median(r for r, _ in results["without"])
    probe_rps = statistics.median(r for r, _ in results["with"])
    base_p99 = statistics.median(p for _, p in results["without"])
    probe_p99 = statistics.median(p for _, p in results["with"])
    print(f"median without probe: {base_rps:.1f} req/s, p99 {base_p99:.2f} ms")
    print(f"median with probe:    {probe_rps:.1f} req/s, p99 {probe_p99:.2f} ms")
    print(
        f"requests recorded: {consumer.observations}, spans: {consumer.spans + exported_spans}, "
        f"kernel events lost: {events_lost}, dropped spans: {dropped_spans}"
    )
    print(f"overhead: {(base_rps - probe_rps) / base_rps * 100:.1f} %")


if __name__ == "__main__":
    main()
