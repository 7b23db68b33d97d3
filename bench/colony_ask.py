"""How long the colony takes to answer the MCP tools and the web view's JSON, over N agents.

    .venv/bin/python bench/colony_ask.py [--agents 100] [--services 5] [--minutes 60] [--rounds 5]

Builds a real colony DuckDB file: every agent serves `--services` services, each with one HTTP
metric row a minute for `--minutes` minutes (a 9-bucket histogram), and 20 one-span traces. Then
asks it through `ColonyBackend` over the colony's own fleet executor (what `coral-ebpf mcp --colony`
and the colony's `/ui/` use, minus the transport) and prints the median of `--rounds` calls per tool:
list_services (which adds each service's per-agent breakdown), red_summary, slow_traces,
agent_status and list_agents.
Last line: `colony ask: <slowest median> ms (<tool>) over <N> agents`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coral_ebpf.ask import tools  # noqa: E402
from coral_ebpf.colony.backend import ColonyBackend  # noqa: E402
from coral_ebpf.colony.queries import fleet_executor  # noqa: E402
from coral_ebpf.colony.store import ColonyStore, status_document  # noqa: E402
from tests.helpers.pull_rows import http_row, span_row  # noqa: E402


def fill(store: ColonyStore, agents: int, services: int, minutes: int) -> int:
    now = time.time()
    total = 0
    for index in range(agents):
        agent_id = f"agent-{index:03d}"
        store.reset_session(agent_id, "s1")
        rows: list[dict[str, Any]] = []
        for service in range(services):
            for minute in range(minutes):
                row = http_row(len(rows) + 1, [minute % 5, 3, 1, 0, 0, 0, 0, 0, minute % 2], agent_id=agent_id)
                row.update(service_name=f"svc-{service}", timestamp=int((now - 60 * minute - 1) * 1e9))
                row["start_time"] = row["timestamp"] - 60_000_000_000
                rows.append(row)
        spans = [span_row(i + 1, trace_id=index * 1000 + i + 1, agent_id=agent_id) for i in range(20)]
        store.store(agent_id, "s1", {"http": rows, "traces": spans}, {"http": len(rows), "traces": len(spans)})
        store.record_poll(agent_id, f"10.0.{index // 250}.{index % 250}:9100", last_success=now, lag_rows=0)
        total += len(rows) + len(spans)
    return total


def median_ms(call: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--services", type=int, default=5)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="colony-ask-"))
    try:
        store = ColonyStore(directory / "colony.duckdb")
        started = time.perf_counter()
        rows = fill(store, args.agents, args.services, args.minutes)
        print(f"{rows} rows from {args.agents} agents stored in {time.perf_counter() - started:.1f} s")

        def status() -> dict[str, Any]:
            cursor = store.cursor()
            try:
                document = status_document(cursor, directory / "colony.duckdb")
            finally:
                cursor.close()
            document["colony"] = {"agents_configured": [f"agent-{i:03d}" for i in range(args.agents)]}
            return document

        backend = ColonyBackend(fleet_executor(store.cursor), status)
        calls: dict[str, Callable[[], Any]] = {
            "list_services": lambda: tools.list_services(backend, window="1h"),
            "red_summary": lambda: tools.red_summary(backend, service="svc-0", window="1h"),
            "slow_traces": lambda: tools.slow_traces(backend, window="1h"),
            "agent_status": lambda: tools.agent_status(backend),
            "list_agents": lambda: tools.list_agents(backend),
        }
        figures = {name: median_ms(call, args.rounds) for name, call in calls.items()}
        for name, value in figures.items():
            print(f"{name:14s} {value:8.1f} ms (median of {args.rounds})")
        store.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    slowest = max(figures, key=lambda name: figures[name])
    print("(2 shared cores; indicative)")
    print(f"colony ask: {figures[slowest]:.1f} ms ({slowest}) over {args.agents} agents")


if __name__ == "__main__":
    main()
