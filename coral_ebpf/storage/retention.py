"""Retention: delete rows older than the cutoff from every table.

Rows dated after a ceiling (the agent's clock plus one retention window) go too, and so do
rows whose time is `infinity` or `-infinity`: the door (`transform.door`) no longer accepts
such times, but a database written by an older version or a sender whose clock was far ahead
must not keep rows that no window query ever sees and that would otherwise stay forever.
"""

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


def delete_expired(
    connection: duckdb.DuckDBPyConnection, cutoff_unix: float, ceiling_unix: float | None = None
) -> dict[str, int]:
    """Delete rows whose time is before `cutoff_unix`, after `ceiling_unix` or not finite; count per table."""
    cutoff = utc_naive(cutoff_unix)
    # utc_naive cannot represent years after 9999; such a ceiling means "no ceiling" (infinity still goes).
    ceiling = utc_naive(min(ceiling_unix, 253_402_214_400.0)) if ceiling_unix is not None else None
    deleted: dict[str, int] = {}
    for spec in TABLES.values():
        column = spec.time_column
        outside = f"({column} < $cutoff OR NOT isfinite({column})"
        outside += f" OR {column} > $ceiling)" if ceiling is not None else ")"
        sql = f"DELETE FROM {spec.name} WHERE {outside}"
        if spec.name == RESOURCES.name:
            sql += f" AND {_UNREFERENCED}"
        args: dict[str, object] = {"cutoff": cutoff}
        if ceiling is not None:
            args["ceiling"] = ceiling
        row = connection.execute(sql, args).fetchone()
        deleted[spec.name] = int(row[0]) if row else 0
    return deleted
