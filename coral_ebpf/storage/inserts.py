"""One INSERT per table per write, from an Arrow table; span deduplication.

Spans are deduplicated on (trace_id, span_id): a sender that retries a request whose answer
it never saw must not double-count. Such a retry comes within the sender's retry budget
(seconds to a few minutes), so a new span is compared with the spans *inserted* recently:
an anti-join against the rows with `seq_id` above a floor (`SpanWindow`). seq_id follows
insertion order, so DuckDB's min/max zone maps skip every older row group, whatever the spans'
own start times (a long-running span does not widen the search). Duplicates inside the batch
are removed too. Rows not inserted never draw a seq_id, so a puller sees no false gaps.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from coral_ebpf.storage.schema import RESOURCES, SPANS, TABLES

_BATCH_VIEW = "__coral_batch"

# How far back a re-sent span is recognised: by insertion time, and at most this many rows.
DEDUPE_WINDOW_SECONDS = 600.0
DEDUPE_MAX_ROWS = 2_000_000


class SpanWindow:
    """The seq_id above which lie the spans inserted in the last DEDUPE_WINDOW_SECONDS."""

    def __init__(self, max_seq: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_seq = max_seq
        self._clock = clock
        # (time of a write, max seq_id before it). Rows stored before the agent started count
        # as written at start: a sender retrying across an agent restart is caught too.
        self._writes: deque[tuple[float, int]] = deque([(clock(), 0)])

    @classmethod
    def for_table(cls, connection: duckdb.DuckDBPyConnection) -> SpanWindow:
        row = connection.execute(f"SELECT coalesce(max(seq_id), 0) FROM {SPANS.name}").fetchone()
        return cls(int(row[0]) if row else 0)

    def floor(self) -> int:
        horizon = self._clock() - DEDUPE_WINDOW_SECONDS
        while self._writes and self._writes[0][0] <= horizon:
            self._writes.popleft()
        by_time = self._writes[0][1] if self._writes else self.max_seq
        return max(by_time, self.max_seq - DEDUPE_MAX_ROWS, 0)

    def wrote(self, max_seq_before: int, max_seq_after: int) -> None:
        self._writes.append((self._clock(), max_seq_before))
        self.max_seq = max(self.max_seq, max_seq_after)

    def refresh(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Record a write that just committed (reads the new highest seq_id)."""
        before = self.max_seq
        row = connection.execute(
            f"SELECT coalesce(max(seq_id), 0) FROM {SPANS.name} WHERE seq_id > ?", [before]
        ).fetchone()
        self.wrote(before, int(row[0]) if row else before)


def _has_repeated_span_ids(table: pa.Table) -> bool:
    # Distinct span ids imply distinct (trace_id, span_id) pairs; span ids are random 64-bit
    # numbers, so a repeat is almost always a real duplicate and the slower path is rare.
    return bool(pc.count_distinct(table.column("span_id")).as_py() != table.num_rows)


def _span_insert_sql(columns: str, deduplicate_batch: bool) -> str:
    sql = (
        f"INSERT INTO {SPANS.name} ({columns}) SELECT {columns} FROM {_BATCH_VIEW} AS b "
        f"WHERE NOT EXISTS (SELECT 1 FROM {SPANS.name} AS s WHERE s.seq_id > $floor "
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


def insert_table(
    connection: duckdb.DuckDBPyConnection, name: str, table: pa.Table, span_window: SpanWindow | None = None
) -> int:
    """Insert `table` into `name`; return the number of rows actually inserted.

    Spans are checked against the spans above `span_window.floor()` (all spans without one).
    """
    # Only the columns the batch has: a batch spooled by an older schema version (replayed after an
    # upgrade) lacks the columns added since, which then take their default (NULL).
    present = set(table.column_names)
    columns = ", ".join(column for column in TABLES[name].column_names if column in present)
    connection.register(_BATCH_VIEW, table)
    try:
        if name == SPANS.name:
            floor = span_window.floor() if span_window is not None else 0
            sql = _span_insert_sql(columns, _has_repeated_span_ids(table))
            result = connection.execute(sql, {"floor": floor}).fetchone()
        elif name == RESOURCES.name:
            result = connection.execute(_RESOURCE_UPSERT).fetchone()
        else:
            sql = f"INSERT INTO {name} ({columns}) SELECT {columns} FROM {_BATCH_VIEW}"
            result = connection.execute(sql).fetchone()
    finally:
        connection.unregister(_BATCH_VIEW)
    return int(result[0]) if result else 0
