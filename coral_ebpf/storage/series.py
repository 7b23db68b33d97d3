"""The metric series a previous run stored, and until when: what the restart baseline needs.

A series is identified in the database by (resource_id, metric_name, unit, attributes JSON):
the stored form of the transform's series key (the scope name is not stored, so series that
differ only by scope share an entry, which can only make a baseline more cautious).
"""

from __future__ import annotations

from typing import NamedTuple

import duckdb

from coral_ebpf.storage.schema import METRIC_TABLES


class StoredSeries(NamedTuple):
    resource_id: int
    metric_name: str
    unit: str
    attributes: str | None  # the JSON text exactly as transform wrote it


def stored_series(connection: duckdb.DuckDBPyConnection) -> dict[StoredSeries, int]:
    """Every series with a row in a metric table, mapped to its newest stored `timestamp` in ns."""
    latest: dict[StoredSeries, int] = {}
    for table in METRIC_TABLES:
        rows = connection.execute(
            f"SELECT resource_id, metric_name, unit, attributes::VARCHAR, max(epoch_ns(timestamp)) "
            f"FROM {table} WHERE isfinite(timestamp) GROUP BY ALL"
        ).fetchall()
        for resource_id, metric_name, unit, attributes, newest in rows:
            key = StoredSeries(resource_id, metric_name, unit, attributes)
            latest[key] = max(newest, latest.get(key, newest))
    return latest
