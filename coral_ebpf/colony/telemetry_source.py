"""The colony as a `TelemetrySource`: `/metrics`, `/-/healthy` and `/-/ready` on the shared
operator listener (`coral_ebpf.telemetry.server.OperatorServer`), as the agent has them.

Built from `Colony.status()` (the document `colony status --json` shows, which carries
`Colony.metrics()` under `metrics`), never from the poller's internals, so the figures and the
status agree. The `_total` families are the poller's in-memory counters (they start at 0 with
the process); the per-agent ones are gauges read from the colony database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from coral_ebpf import __version__
from coral_ebpf.telemetry.exposition import Labels, MetricFamily, MetricType, Sample
from coral_ebpf.telemetry.source import Health

StatusDocument = dict[str, Any]
PREFIX = "coral_ebpf_colony_"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class _Families:
    def __init__(self) -> None:
        self.families: list[MetricFamily] = []

    def add(
        self, name: str, help_text: str, kind: MetricType, samples: Iterable[tuple[Labels, Any]], unit: str = ""
    ) -> None:
        kept = [Sample(labels, number) for labels, value in samples if (number := _number(value)) is not None]
        self.families.append(MetricFamily(PREFIX + name, help_text, kind, unit=unit, samples=kept))

    def one(self, name: str, help_text: str, kind: MetricType, value: Any, unit: str = "") -> None:
        self.add(name, help_text, kind, [((), value)], unit)


def colony_families(document: StatusDocument) -> list[MetricFamily]:
    """Every family of one status document (poll counters, per-agent state, the database)."""
    families = _Families()
    colony: Mapping[str, Any] = document.get("colony", {})
    metrics: Mapping[str, Any] = document.get("metrics", {})
    version = str(colony.get("version", __version__))
    families.add("build", "The colony's version.", MetricType.INFO, [((("version", version),), 1)])
    families.one("poll_cycles", "Poll cycles finished.", MetricType.COUNTER, metrics.get("poll_cycles_total"))
    families.one(
        "poll_cycle_duration_seconds",
        "How long the last poll cycle took.",
        MetricType.GAUGE,
        metrics.get("poll_cycle_seconds"),
        unit="seconds",
    )
    families.one("rows_stored", "Rows stored from agents.", MetricType.COUNTER, metrics.get("rows_stored_total"))
    received: Mapping[str, Any] = metrics.get("rows_received_total", {})
    families.add(
        "rows_received",
        "Rows received from agents, per data type.",
        MetricType.COUNTER,
        [((("type", kind),), count) for kind, count in sorted(received.items())],
    )
    families.one(
        "polls_failed", "Polls of one agent that failed.", MetricType.COUNTER, metrics.get("polls_failed_total")
    )
    families.one(
        "gaps_found", "Sequence gaps found in agents' rows.", MetricType.COUNTER, metrics.get("gaps_found_total")
    )
    families.one(
        "agents_configured", "Agents the colony polls.", MetricType.GAUGE, len(colony.get("agents_configured", []))
    )
    families.one(
        "agent_file_problems",
        "Files in agents_dir that could not be read (skipped).",
        MetricType.GAUGE,
        len(colony.get("agent_file_problems", [])),
    )
    agents: Sequence[Mapping[str, Any]] = document.get("agents", [])

    def per_agent(key: str) -> list[tuple[Labels, Any]]:
        return [((("agent_id", str(agent["agent_id"])),), agent.get(key)) for agent in agents]

    families.add(
        "agent_up",
        "1 when the agent's last poll succeeded, else 0.",
        MetricType.GAUGE,
        [
            (
                (("agent_id", str(agent["agent_id"])),),
                int(bool(agent.get("last_success")) and not agent.get("last_error")),
            )
            for agent in agents
        ],
    )
    families.add(
        "agent_consecutive_failures",
        "Polls of the agent that failed in a row.",
        MetricType.GAUGE,
        per_agent("consecutive_failures"),
    )
    families.add(
        "agent_last_success_timestamp_seconds",
        "When the agent was last polled successfully (unix seconds).",
        MetricType.GAUGE,
        per_agent("last_success"),
        unit="seconds",
    )
    families.add(
        "agent_lag_rows",
        "Rows the agent holds that the colony has not copied yet.",
        MetricType.GAUGE,
        per_agent("lag_rows"),
    )
    families.add("agent_rows_stored", "Rows stored from the agent.", MetricType.GAUGE, per_agent("rows_stored"))
    families.add(
        "agent_gaps",
        "Sequence gaps of the agent, per state.",
        MetricType.GAUGE,
        [
            ((("agent_id", str(agent["agent_id"])), ("state", state)), count)
            for agent in agents
            for state, count in sorted(agent.get("gaps", {}).items())
        ],
    )
    database: Mapping[str, Any] = document.get("database", {})
    families.one(
        "database_size_bytes",
        "The colony database file and its WAL.",
        MetricType.GAUGE,
        database.get("size_bytes"),
        "bytes",
    )
    families.add(
        "database_rows",
        "Rows in the colony database, per data type.",
        MetricType.GAUGE,
        [((("type", kind),), count) for kind, count in sorted(database.get("rows", {}).items())],
    )
    return families.families


class ColonyTelemetry:
    """A `TelemetrySource` over the colony's status function (`Colony.status`)."""

    def __init__(self, status: Callable[[], StatusDocument]) -> None:
        self._status = status

    def collect(self) -> Sequence[MetricFamily]:
        return colony_families(self._status())

    def healthy(self) -> Health:
        colony = self._status().get("colony", {})
        if not colony.get("polling"):
            return Health(False, "unhealthy: the colony's poll loop is not running")
        return Health(True, f"alive: coral-ebpf colony {colony.get('version', '?')} pid {colony.get('pid', '?')}")

    def ready(self) -> Health:
        document = self._status()
        colony, metrics = document.get("colony", {}), document.get("metrics", {})
        if not colony.get("polling"):
            return Health(False, "not ready: the colony's poll loop is not running")
        if not metrics.get("poll_cycles_total"):
            return Health(False, "not ready: the first poll cycle has not finished")
        agents = document.get("agents", [])
        failing = sorted(str(a["agent_id"]) for a in agents if a.get("last_error"))
        text = f"ready: {len(colony.get('agents_configured', []))} agents polled, database writing"
        # An agent that is down is that agent's problem: the colony itself still works.
        return Health(True, text + (f"; failing: {', '.join(failing)}" if failing else ""))
