"""Retention: delete rows older than the cutoff from every table."""

from __future__ import annotations

import datetime as dt

import duckdb

from coral_ebpf.storage.schema import RESOURCES, TABLES

# A resource goes only when no row refers to it any more: its last_seen is the agent's clock at
# arrival while span times are the sender's, and a sender whose clock runs ahead would
# otherwise leave spans without their resource.
_UNREFERENCED = " AND ".join(
    f"resource_id NOT IN (SELECT DISTINCT resource_id FROM {name})" for name in TABLES if name != RESOURCES.name
)


def utc_naive(unix_seconds: float) -> dt.datetime:
    """Stored timestamps are naive UTC (TIMESTAMP); compare them with naive UTC values only."""
    return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=unix_seconds)


def delete_expired(connection: duckdb.DuckDBPyConnection, cutoff_unix: float) -> dict[str, int]:
    """Delete rows whose time column is before `cutoff_unix`; return the count per table."""
    cutoff = utc_naive(cutoff_unix)
    deleted: dict[str, int] = {}
    for spec in TABLES.values():
        sql = f"DELETE FROM {spec.name} WHERE {spec.time_column} < ?"
        if spec.name == RESOURCES.name:
            sql += f" AND {_UNREFERENCED}"
        row = connection.execute(sql, [cutoff]).fetchone()
        deleted[spec.name] = int(row[0]) if row else 0
    return deleted
