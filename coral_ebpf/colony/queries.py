"""Fleet queries on the colony database: the agent's RED and trace queries, plus a per-agent breakdown.

The colony's tables have the agent's columns, so `run_query` runs on them unchanged; rows of
every agent add up bucket by bucket before any percentile is computed (never an average of
the agents' percentiles). `agent` narrows to one agent (glob with *).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import duckdb

from coral_ebpf.query.dispatch import run_query
from coral_ebpf.query.params import QueryError, RedParams
from coral_ebpf.query.red import PROTOCOLS, red_summary
from coral_ebpf.storage.retention import utc_naive

FLEET_KINDS = ("http", "grpc", "sql", "traces")  # what the pull API carries


def fleet_query(connection: duckdb.DuckDBPyConnection, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """`run_query` over every agent's rows; RED kinds add `by_agent` (each agent's overall line)."""
    if kind not in FLEET_KINDS:
        raise QueryError(
            f"a colony holds {', '.join(FLEET_KINDS)}; {kind!r} is not pulled from the agents (query it on an agent)"
        )
    result = run_query(connection, kind, params)
    result["fleet"] = True
    if kind not in PROTOCOLS:
        return result
    red = RedParams.from_dict(params)
    start, end = red.window()
    agents = connection.execute(
        f"SELECT DISTINCT agent_id FROM {PROTOCOLS[kind].table} "
        "WHERE timestamp > $start AND timestamp <= $end ORDER BY 1",
        {"start": utc_naive(start), "end": utc_naive(end)},
    ).fetchall()
    breakdown = []
    for (agent_id,) in agents:
        if red.agent and agent_id != red.agent and not _glob_match(connection, agent_id, red.agent):
            continue
        per_agent = red_summary(connection, kind, RedParams.from_dict({**params, "agent": agent_id}))
        if per_agent["overall"]["requests"]:
            breakdown.append({"agent": agent_id, **per_agent["overall"]})
    result["by_agent"] = breakdown
    return result


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
