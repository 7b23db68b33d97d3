"""RED from stored spans, for a protocol whose metrics never arrived.

Beyla v3.31.0 exports plain-text SQL calls only as spans (kind SERVER, `server.address` set to the
client's process name) and no `db.client.*` metrics at all; the same can happen for any protocol
when only traces are exported. Each subquery here turns `otel_spans` rows into the columns of that
protocol's metrics table (`service_name`, `side`, the protocol's keys, `error_type`, `timestamp` =
the span's end), so red.py's filters and error rules apply unchanged; durations are the spans' own,
so the percentiles are exact rather than interpolated within a bucket.

A span belongs to a protocol by its attributes, whatever its kind: SQL by any `db.*` system or
operation, gRPC by `rpc.method`, HTTP by an HTTP method without `rpc.method`.
"""

from __future__ import annotations

from typing import Any

import duckdb


def _attribute(*names: str) -> str:
    return "coalesce(" + ", ".join(f"json_extract_string(attributes, '$.\"{name}\"')" for name in names) + ")"


_ERROR_TYPE = f"coalesce({_attribute('error.type')}, CASE WHEN status_code = 2 THEN 'span status error' END)"
_SIDE = "CASE span_kind WHEN 'SERVER' THEN 'server' WHEN 'CLIENT' THEN 'client' ELSE lower(span_kind) END"
_COMMON = (
    "service_name, service_instance_id, agent_id, end_time AS timestamp, start_time, duration_ns, "
    f"{_ERROR_TYPE} AS error_type"
)

# Per protocol: a subquery over otel_spans with the metrics table's column names.
SPAN_SOURCES: dict[str, str] = {
    # A database call is a client call, whatever kind Beyla gives the span (it sends SERVER).
    "sql": (
        f"SELECT {_COMMON}, 'client' AS side, "
        f"coalesce(db_system, {_attribute('db.system.name', 'db.system')}) AS db_system, "
        f"coalesce(db_operation, {_attribute('db.operation.name', 'db.operation')}) AS sql_operation, "
        f"{_attribute('db.collection.name', 'db.sql.table')} AS table_name "
        "FROM otel_spans WHERE db_system IS NOT NULL OR db_operation IS NOT NULL"
    ),
    "grpc": (
        f"SELECT {_COMMON}, {_SIDE} AS side, rpc_method AS grpc_method, rpc_status_code AS grpc_status_code "
        "FROM otel_spans WHERE rpc_method IS NOT NULL"
    ),
    "http": (
        f"SELECT {_COMMON}, {_SIDE} AS side, http_method, http_route, http_status_code "
        "FROM otel_spans WHERE http_method IS NOT NULL AND rpc_method IS NULL"
    ),
}


def span_groups(
    connection: duckdb.DuckDBPyConnection,
    kind: str,
    *,
    columns: list[str],
    where: str,
    error_sql: str,
    four_xx_sql: str,
    args: dict[str, Any],
) -> list[tuple[Any, ...]]:
    """Per group of `columns`: (*group, requests, errors, 4xx answers, [p50, p95, p99] in seconds)."""
    group_sql = ", ".join(columns)
    return connection.execute(
        f"SELECT {group_sql}, count(*)::UBIGINT, (count(*) FILTER (WHERE {error_sql}))::UBIGINT, "
        f"(count(*) FILTER (WHERE {four_xx_sql}))::UBIGINT, quantile_cont(duration_ns / 1e9, [0.5, 0.95, 0.99]) "
        f"FROM ({SPAN_SOURCES[kind]}) AS spans WHERE {where} GROUP BY ALL",
        args,
    ).fetchall()


def all_durations(
    connection: duckdb.DuckDBPyConnection, kind: str, where: str, args: dict[str, Any]
) -> list[float] | None:
    """[p50, p95, p99] in seconds over every matching span (the overall line)."""
    row = connection.execute(
        f"SELECT quantile_cont(duration_ns / 1e9, [0.5, 0.95, 0.99]) FROM ({SPAN_SOURCES[kind]}) AS spans "
        f"WHERE {where}",
        args,
    ).fetchone()
    return None if row is None or row[0] is None else [float(v) for v in row[0]]
