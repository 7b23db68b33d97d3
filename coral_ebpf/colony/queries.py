"""Fleet queries on the colony database: the agent's RED and trace queries, plus a per-agent breakdown.

The colony's tables have the agent's columns, so `run_query` runs on them unchanged; rows of
every agent add up bucket by bucket before any percentile is computed (never an average of
the agents' percentiles). `agent` narrows to one agent (glob with *).

Every answer names the agents it came from: RED kinds add `by_agent` (each agent's overall
line), "services" lists per service the agents that served it (`agents`, each with its own
headline RED; `instances` counts them, since a colony does not pull the agents' resources),
traces carry `agents` and a waterfall's spans each their `agent`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import duckdb

from coral_ebpf.query.dispatch import run_query
from coral_ebpf.query.params import QueryError, RedParams
from coral_ebpf.query.red import PROTOCOLS, overall_by, red_summary
from coral_ebpf.query.services import SERVICE_PROTOCOLS
from coral_ebpf.storage.retention import utc_naive

FLEET_KINDS = ("http", "grpc", "sql", "traces", "waterfall", "services")  # what the pull API carries


def fleet_query(connection: duckdb.DuckDBPyConnection, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """`run_query` over every agent's rows; RED kinds add `by_agent` (each agent's overall line)."""
    if kind not in FLEET_KINDS:
        raise QueryError(
            f"a colony holds {', '.join(FLEET_KINDS)}; {kind!r} is not pulled from the agents (query it on an agent)"
        )
    result = run_query(connection, kind, params)
    result["fleet"] = True
    if kind == "services":
        _services_by_agent(connection, params, result)
    if kind not in PROTOCOLS:
        return result
    red = replace(RedParams.from_dict(params), by=None)
    breakdown = overall_by(connection, kind, red, "agent_id", "agent")
    if breakdown is None:  # no metric rows: each agent's overall line from its spans
        breakdown = []
        for agent_id in _agents_in_window(connection, (kind,), red):
            per_agent = red_summary(connection, kind, replace(red, agent=agent_id))
            breakdown.append({"agent": agent_id, **per_agent["overall"]})
    result["by_agent"] = [line for line in breakdown if line["requests"]]
    return result


def _agents_in_window(connection: duckdb.DuckDBPyConnection, kinds: tuple[str, ...], red: RedParams) -> list[str]:
    """The agent_ids with rows of `kinds` in the window, narrowed by `red.agent` (glob with *)."""
    start, end = red.window()
    found: set[str] = set()
    for kind in kinds:
        found.update(
            agent_id
            for (agent_id,) in connection.execute(
                f"SELECT DISTINCT agent_id FROM {PROTOCOLS[kind].table} WHERE timestamp > $start AND timestamp <= $end",
                {"start": utc_naive(start), "end": utc_naive(end)},
            ).fetchall()
        )
    return sorted(a for a in found if not red.agent or a == red.agent or _glob_match(connection, a, red.agent))


_MEASURES = ("requests", "rate_per_s", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms")


def _services_by_agent(
    connection: duckdb.DuckDBPyConnection, params: Mapping[str, Any], result: dict[str, Any]
) -> None:
    """Each service's agents, with that agent's own headline RED (the instances of a fleet).

    As `list_services` does per service: server side, per protocol, the headline from the protocol
    with the most requests; here per (service, agent), one grouped query per protocol.
    """
    red = replace(RedParams.from_dict(params), side="server", by=None, group="agent")
    per_agent: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for kind in SERVICE_PROTOCOLS:
        for row in red_summary(connection, kind, red)["rows"]:
            if row["requests"] and row.get("agent") is not None:  # span-derived rows carry no agent column
                per_agent.setdefault((row["service"], row["agent"]), {})[kind] = row
    per_service: dict[str, list[dict[str, Any]]] = {}
    for (service, agent_id), protocols in sorted(per_agent.items()):
        kind, row = max(protocols.items(), key=lambda item: item[1]["requests"])
        per_service.setdefault(service, []).append({"agent": agent_id, "protocol": kind, **_pick(row)})
    if params.get("agent"):  # only the services the chosen agents served
        result["services"] = [s for s in result["services"] if s["service"] in per_service]
    for service in result["services"]:
        agents = per_service.get(service["service"], [])
        service["agents"] = agents
        service["instances"] = len(agents)
        service["instance_ids"] = [entry["agent"] for entry in agents]


def _pick(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in _MEASURES}


def _glob_match(connection: duckdb.DuckDBPyConnection, value: str, pattern: str) -> bool:
    row = connection.execute("SELECT $v GLOB $p", {"v": value, "p": pattern}).fetchone()
    return bool(row and row[0])


def fleet_executor(
    reader: Callable[[], duckdb.DuckDBPyConnection],
) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    def execute(kind: str, params: dict[str, Any]) -> dict[str, Any]:
        connection = reader()
        try:
            return fleet_query(connection, kind, params)
        finally:
            connection.close()

    return execute
