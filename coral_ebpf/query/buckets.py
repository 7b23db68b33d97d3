"""Reading a RED table's histogram rows: which are explicit-bucket, and the exponential ones' buckets.

A database of schema version 1 opened read-only (no agent has migrated it yet) has no `exp_*`
columns: every row is then explicit-bucket.
"""

from __future__ import annotations

from typing import Any

import duckdb

from coral_ebpf.storage.exponential import ExpBuckets


def has_exponential_columns(connection: duckdb.DuckDBPyConnection, table: str) -> bool:
    """False for a database of schema version 1 opened read-only (the agent adds them when it starts)."""
    row = connection.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE table_name = ? AND column_name = 'exp_scale'", [table]
    ).fetchone()
    return bool(row and row[0])


_EXP_COLUMNS = (
    "exp_scale, exp_zero_count, exp_zero_threshold_s, exp_positive_offset, exp_positive_counts, "
    "exp_negative_offset, exp_negative_counts"
)


def exponential_rows(
    connection: duckdb.DuckDBPyConnection, table: str, select: list[str], where: str, args: dict[str, Any]
) -> list[tuple[tuple[Any, ...], ExpBuckets]]:
    """(the values of the `select` expressions, the row's exponential buckets) for every exponential row
    matching `where`."""
    if not has_exponential_columns(connection, table):
        return []
    width = len(select)
    rows = connection.execute(
        f"SELECT {', '.join(select)}, {_EXP_COLUMNS} FROM {table} WHERE ({where}) AND exp_scale IS NOT NULL", args
    ).fetchall()
    result = []
    for row in rows:
        scale, zero, threshold, positive_offset, positive, negative_offset, negative = row[width:]
        buckets = ExpBuckets(
            scale,
            zero,
            threshold or 0.0,
            positive_offset or 0,
            tuple(positive or ()),
            negative_offset or 0,
            tuple(negative or ()),
        )
        result.append((tuple(row[:width]), buckets))
    return result


def explicit_only(connection: duckdb.DuckDBPyConnection, table: str) -> str:
    """The SQL condition that keeps explicit-bucket rows."""
    return "exp_scale IS NULL" if has_exponential_columns(connection, table) else "true"
