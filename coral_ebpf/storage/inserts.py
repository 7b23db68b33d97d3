"""One INSERT per table per write, from an Arrow table.

Spans are deduplicated on (trace_id, span_id): a sender that retries a request whose answer
it never saw must not double-count. The check is an anti-join against the stored rows whose
start_time lies in the batch's range (DuckDB skips the other row groups by their min/max
zone maps); duplicates inside the batch itself are removed first when there are any. Rows
that are not inserted never draw a seq_id, so a puller sees no false gaps from them.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from coral_ebpf.storage.schema import RESOURCES, SPANS, TABLES

_EPOCH = dt.datetime(1970, 1, 1)
_BATCH_VIEW = "__coral_batch"


def _as_timestamp(ns: int, offset_us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=ns // 1000 + offset_us)


def _has_repeated_span_ids(table: pa.Table) -> bool:
    # Distinct span ids imply distinct (trace_id, span_id) pairs; span ids are random 64-bit
    # numbers, so a repeat is almost always a real duplicate and the slower path is rare.
    return bool(pc.count_distinct(table.column("span_id")).as_py() != table.num_rows)


def _span_insert_sql(columns: str, deduplicate_batch: bool) -> str:
    sql = (
        f"INSERT INTO {SPANS.name} ({columns}) SELECT {columns} FROM {_BATCH_VIEW} AS b "
        f"WHERE NOT EXISTS (SELECT 1 FROM {SPANS.name} AS s WHERE s.start_time BETWEEN $lo AND $hi "
        "AND s.span_id = b.span_id AND s.trace_id_lo = b.trace_id_lo AND s.trace_id_hi = b.trace_id_hi)"
    )
    if deduplicate_batch:
        sql += " QUALIFY row_number() OVER (PARTITION BY b.trace_id_hi, b.trace_id_lo, b.span_id) = 1"
    return sql


# One row per resource (a write may carry the same resource several times), then an upsert
# that keeps the first sighting and moves last_seen forward.
_RESOURCE_UPSERT = f"""
INSERT INTO {RESOURCES.name}
SELECT resource_id, any_value(service_name), any_value(service_namespace), any_value(service_instance_id),
       any_value(process_pid), any_value(telemetry_sdk_name), any_value(attributes), min(first_seen), max(last_seen)
FROM {_BATCH_VIEW} GROUP BY resource_id
ON CONFLICT (resource_id) DO UPDATE SET last_seen = greatest({RESOURCES.name}.last_seen, excluded.last_seen)
"""


def insert_table(connection: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> int:
    """Insert `table` into `name`; return the number of rows actually inserted."""
    columns = ", ".join(TABLES[name].column_names)
    connection.register(_BATCH_VIEW, table)
    try:
        if name == SPANS.name:
            bounds = pc.min_max(table.column("start_time").cast(pa.int64()))
            # DuckDB rounds ns to us on the way into TIMESTAMP; a little slack covers it.
            params = {"lo": _as_timestamp(bounds["min"].as_py(), -1), "hi": _as_timestamp(bounds["max"].as_py(), 2)}
            result = connection.execute(_span_insert_sql(columns, _has_repeated_span_ids(table)), params).fetchone()
        elif name == RESOURCES.name:
            result = connection.execute(_RESOURCE_UPSERT).fetchone()
        else:
            sql = f"INSERT INTO {name} ({columns}) SELECT {columns} FROM {_BATCH_VIEW}"
            result = connection.execute(sql).fetchone()
    finally:
        connection.unregister(_BATCH_VIEW)
    return int(result[0]) if result else 0
