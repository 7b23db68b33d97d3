"""Reading a RED table's histogram rows: which are explicit-bucket, and the exponential ones' buckets.

A database of schema version 1 opened read-only (no agent has migrated it yet) has no `exp_*`
columns: every row is then explicit-bucket.
"""

from __future__ import annotations

from typing import Any

import duckdb

from coral_ebpf.storage.exponential import ExpBuckets, dense


def has_exponential_columns(connection: duckdb.DuckDBPyConnection, table: str) -> bool:
    """False for a database of schema version 1 opened read-only (the agent adds them when it starts)."""
    row = connection.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE table_name = ? AND column_name = 'exp_scale'", [table]
    ).fetchone()
    return bool(row and row[0])


def exponential_rows(
    connection: duckdb.DuckDBPyConnection,
    table: str,
    select: list[str],
    where: str,
    args: dict[str, Any],
    *,
    source: str | None = None,
) -> list[tuple[tuple[Any, ...], ExpBuckets]]:
    """Per distinct value of the `select` expressions and scale: the exponential rows matching `where`,
    summed into one point.

    DuckDB does the adding (bucket index = offset + position, counts summed per index), as the explicit
    path sums per bound: an hour of 5-second rows is then a handful of points for Python to merge
    across scales (`exponential.merge`), not thousands. The zero threshold is the largest of the rows'.
    `source` replaces `table` in the FROM clause (e.g. the table joined with its instance ids).
    """
    if not has_exponential_columns(connection, table):
        return []
    width = len(select)
    keys = ", ".join(f"k{i}" for i in range(width))
    aliased = ", ".join(f"{expression} AS k{i}" for i, expression in enumerate(select))
    source = f"FROM {source or table} WHERE ({where}) AND exp_scale IS NOT NULL"
    points: dict[tuple[Any, ...], tuple[int, float, dict[int, int], dict[int, int]]] = {}
    zeros = connection.execute(
        f"SELECT {keys}, exp_scale, sum(exp_zero_count)::HUGEINT, max(exp_zero_threshold_s) "
        f"FROM (SELECT {aliased}, exp_scale, exp_zero_count, exp_zero_threshold_s {source}) GROUP BY ALL",
        args,
    ).fetchall()
    for row in zeros:
        points[tuple(row[: width + 1])] = (int(row[width + 1] or 0), float(row[width + 2] or 0.0), {}, {})
    for side, (offset, counts) in enumerate(
        (("exp_positive_offset", "exp_positive_counts"), ("exp_negative_offset", "exp_negative_counts"))
    ):
        buckets = connection.execute(
            f"SELECT {keys}, exp_scale, idx, sum(c)::HUGEINT FROM (SELECT {aliased}, exp_scale, "
            f"{offset} + generate_subscripts({counts}, 1) - 1 AS idx, unnest({counts}) AS c {source}) "
            "WHERE c > 0 GROUP BY ALL",
            args,
        ).fetchall()
        for row in buckets:
            point = points[tuple(row[: width + 1])]
            sparse = point[2] if side == 0 else point[3]
            sparse[int(row[width + 1])] = int(row[width + 2])
    result = []
    for key, (zero, threshold, positive, negative) in points.items():
        positive_offset, positive_counts = dense(positive)
        negative_offset, negative_counts = dense(negative)
        buckets_of_key = ExpBuckets(
            int(key[width]), zero, threshold, positive_offset, positive_counts, negative_offset, negative_counts
        )
        result.append((key[:width], buckets_of_key))
    return result


def explicit_only(connection: duckdb.DuckDBPyConnection, table: str) -> str:
    """The SQL condition that keeps explicit-bucket rows."""
    return "exp_scale IS NULL" if has_exponential_columns(connection, table) else "true"
