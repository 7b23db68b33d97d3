"""One INSERT per table per write, from an Arrow table.

Spans are deduplicated on (trace_id, span_id): a sender that retries a request whose answer
it never saw must not double-count. The check is an anti-join against the rows whose
start_time lies in the batch's range (DuckDB skips the other row groups by their min/max
zone maps), plus a window over the batch itself for duplicates inside one write. Rows that
are not inserted never draw a seq_id, so a puller sees no false gaps from them.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from coral_ebpf.storage.schema import SPANS, TABLES

_EPOCH = dt.datetime(1970, 1, 1)
_BATCH_VIEW = "__coral_batch"


def _as_timestamp(ns: int, offset_us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=ns // 1000 + offset_us)


def insert_table(connection: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> int:
    """Insert `table` into `name`; return the number of rows actually inserted."""
    columns = ", ".join(TABLES[name].column_names)
    connection.register(_BATCH_VIEW, table)
    try:
        if name == SPANS.name:
            bounds = pc.min_max(table.column("start_time").cast(pa.int64()))
            # DuckDB rounds ns to us on the way into TIMESTAMP; one us of slack covers it.
            params = {"lo": _as_timestamp(bounds["min"].as_py(), -1), "hi": _as_timestamp(bounds["max"].as_py(), 2)}
            sql = (
                f"INSERT INTO {name} ({columns}) SELECT {columns} FROM {_BATCH_VIEW} AS b "
                f"WHERE NOT EXISTS (SELECT 1 FROM {name} AS s WHERE s.start_time BETWEEN $lo AND $hi "
                "AND s.trace_id = b.trace_id AND s.span_id = b.span_id) "
                "QUALIFY row_number() OVER (PARTITION BY b.trace_id, b.span_id) = 1"
            )
            result = connection.execute(sql, params).fetchone()
        else:
            sql = f"INSERT INTO {name} ({columns}) SELECT {columns} FROM {_BATCH_VIEW}"
            result = connection.execute(sql).fetchone()
    finally:
        connection.unregister(_BATCH_VIEW)
    return int(result[0]) if result else 0
