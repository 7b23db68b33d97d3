"""SIGKILL at random moments under load; count acknowledged items that were not stored.

    .venv/bin/python bench/durability.py [--kills 10] [--min-load 1.0] [--max-load 4.0] [--seed N]

One agent (`coral-ebpf start`, loopback, temp state dir, Beyla and discovery off) is started
`--kills` times on the same state dir. Each time, 4 senders push spans and metric points
(gRPC traces, OTLP/HTTP traces, gRPC metrics, OTLP/HTTP metrics; raw protobuf, each item with its
own id) and the agent is SIGKILLed after a random time in [min-load, max-load] seconds. A last
start replays the spool and is stopped with SIGTERM; then every acknowledged item is looked up
in the DuckDB file. Prints the items acknowledged, lost, stored twice and stored but never
acknowledged (the agent died before answering), the ingest rate, and last:

    durability: <lost> acknowledged items lost in <N> kills
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.ack_load import Ledger, Sender, compare  # noqa: E402
from tests.helpers.agent_process import AgentProcess  # noqa: E402

MIXES = (("grpc", "traces"), ("http", "traces"), ("grpc", "metrics"), ("http", "metrics"))
SETTINGS = {
    "log_level": "warning",
    "beyla": {"enabled": False},
    "discovery": {"enabled": False},
}


def one_trial(agent: AgentProcess, ledger: Ledger, load_seconds: float) -> tuple[int, float]:
    """Start, load, SIGKILL; return (items acknowledged in this trial, seconds of load)."""
    agent.exit_code = None
    status = agent.start(timeout=180)
    addresses = {"grpc": status["receiver"]["grpc"]["address"], "http": status["receiver"]["http"]["address"]}
    before = ledger.items
    stop = threading.Event()
    senders = [
        Sender(number, transport, signal_name, addresses[transport], ledger=ledger, stop=stop, items_per_request=500)
        for number, (transport, signal_name) in enumerate(MIXES, start=1)
    ]
    started = time.monotonic()
    for sender in senders:
        sender.start()
    time.sleep(load_seconds)
    assert agent.process is not None
    agent.process.send_signal(signal.SIGKILL)
    agent.process.wait(60)
    elapsed = time.monotonic() - started
    stop.set()
    for sender in senders:
        sender.join(30)
    return ledger.items - before, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--min-load", type=float, default=1.0)
    parser.add_argument("--max-load", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("durability: needs root (the agent loads BPF programs)")
        return 1
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    ledger = Ledger()
    with tempfile.TemporaryDirectory(prefix="coral-durability-") as workdir:
        agent = AgentProcess(Path(workdir), SETTINGS)
        load_seconds = 0.0
        try:
            for trial in range(1, args.kills + 1):
                acknowledged, seconds = one_trial(agent, ledger, rng.uniform(args.min_load, args.max_load))
                load_seconds += seconds
                print(f"kill {trial}: {acknowledged} items acknowledged in {seconds:.1f} s before SIGKILL", flush=True)
            agent.exit_code = None
            agent.start(timeout=180)
            agent.wait_for(
                lambda s: s["storage"]["queue_depth"] == 0 and s["storage"]["replay_pending"] == 0,
                timeout=300,
                what="the spool replayed",
            )
            agent.stop()
        finally:
            agent.kill()
        result = compare(agent.state_dir / "coral-ebpf.duckdb", ledger)
    print(f"seed {seed}; outcomes {dict(ledger.outcomes)}")
    print(result)
    print(f"ingest rate {ledger.items / load_seconds:,.0f} acknowledged items/s ({args.kills} trials, 4 senders)")
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"durability: {result.lost} acknowledged items lost in {args.kills} kills")
    return 0 if result.lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
