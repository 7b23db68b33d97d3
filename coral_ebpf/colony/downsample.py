"""Downsampling: metric rows older than `after` merged into `resolution`-long time buckets.

Rows of one series (every column but the measures) whose interval ends in the same bucket become
one row: counts and bucket counts add bucket by bucket (exact: the percentiles of any window made
of whole buckets are unchanged), `sum_s` adds, `min_s`/`max_s` keep the extremes, the interval runs
from the earliest start to the latest end, and the row keeps the largest agent_seq_id of the group.
That seq id cannot come back: polls only ask for seq ids past the checkpoint, and gap retries only
for seq ids never stored.

Each table remembers how far it was downsampled (`colony_metadata`), so a run only reads rows that
aged past the cutoff since the last one.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from typing import Any

import duckdb
import pyarrow as pa

from coral_ebpf.storage.pull import PULL_TABLES
from coral_ebpf.storage.retention import utc_naive
from coral_ebpf.storage.schema import arrow_array

METRIC_KINDS = ("http", "grpc", "sql")
_MEASURES = {"timestamp", "start_time", "count", "sum_s", "min_s", "max_s", "bucket_counts", "agent_seq_id"}


def _key(row: dict[str, Any], columns: Iterable[str], resolution: float) -> tuple[Any, ...]:
    end = row["timestamp"].replace(tzinfo=datetime.UTC).timestamp()
    bucket = math.ceil(end / resolution)  # the bucket whose end is at or after the row's end
    return (bucket, *(tuple(row[c]) if isinstance(row[c], list) else row[c] for c in columns))


def _merge(rows: list[dict[str, Any]]) -> dict[str, Any]:
    merged = dict(rows[0])
    if len(rows) == 1:
        return merged
    merged["timestamp"] = max(r["timestamp"] for r in rows)
    merged["start_time"] = min(r["start_time"] for r in rows)
    merged["count"] = sum(r["count"] for r in rows)
    sums = [r["sum_s"] for r in rows]
    merged["sum_s"] = None if any(s is None for s in sums) else sum(sums)
    mins = [r["min_s"] for r in rows if r["min_s"] is not None]
    maxes = [r["max_s"] for r in rows if r["max_s"] is not None]
    merged["min_s"] = min(mins) if len(mins) == len(rows) else None
    merged["max_s"] = max(maxes) if len(maxes) == len(rows) else None
    merged["bucket_counts"] = [sum(counts) for counts in zip(*(r["bucket_counts"] for r in rows), strict=True)]
    merged["agent_seq_id"] = max(r["agent_seq_id"] for r in rows)
    return merged


def downsample_table(cursor: duckdb.DuckDBPyConnection, kind: str, cutoff: float, resolution: float) -> tuple[int, int]:
    """Merge `kind`'s rows that end before `cutoff` (floored to a bucket end); (rows read, rows written).

    The caller runs this inside a transaction.
    """
    spec = PULL_TABLES[kind]
    cutoff = math.floor(cutoff / resolution) * resolution
    marker = f"downsampled_until:{spec.name}"
    found = cursor.execute("SELECT value FROM colony_metadata WHERE key = ?", [marker]).fetchone()
    since = float(found[0]) if found else 0.0
    if cutoff <= since:
        return 0, 0
    window = [utc_naive(since), utc_naive(cutoff)]
    table = cursor.sql(
        f"SELECT * FROM {spec.name} WHERE timestamp > ? AND timestamp <= ?", params=window
    ).to_arrow_table()
    rows = table.to_pylist()
    columns = [name for name in table.column_names if name not in _MEASURES]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        if row["bucket_counts"] is None or len(row["bucket_counts"]) != len(row["bounds_s"]) + 1:
            continue  # never merge a row whose histogram is not whole
        groups.setdefault(_key(row, columns, resolution), []).append(row)
    merged = [_merge(group) for group in groups.values() if len(group) > 1]
    replaced = sum(len(group) for group in groups.values() if len(group) > 1)
    if merged:
        _delete(cursor, spec.name, [row for group in groups.values() if len(group) > 1 for row in group])
        arrays = [arrow_array([row[field.name] for row in merged], field.type) for field in table.schema]
        cursor.register("merged_rows", pa.Table.from_arrays(arrays, schema=table.schema))
        cursor.execute(f"INSERT INTO {spec.name} BY NAME SELECT * FROM merged_rows")
        cursor.unregister("merged_rows")
    cursor.execute("INSERT OR REPLACE INTO colony_metadata VALUES (?, ?)", [marker, repr(cutoff)])
    return replaced, len(merged)


def _delete(cursor: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> None:
    keys = pa.table(
        {
            "agent_id": [r["agent_id"] for r in rows],
            "agent_session": [r["agent_session"] for r in rows],
            "agent_seq_id": pa.array([r["agent_seq_id"] for r in rows], type=pa.uint64()),
        }
    )
    cursor.register("replaced_rows", keys)
    cursor.execute(
        f"DELETE FROM {table} AS t USING replaced_rows AS r WHERE t.agent_id = r.agent_id "
        "AND t.agent_session = r.agent_session AND t.agent_seq_id = r.agent_seq_id"
    )
    cursor.unregister("replaced_rows")
