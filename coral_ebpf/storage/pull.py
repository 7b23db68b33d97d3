"""Reading rows by seq_id for the pull API: every row stored after a given seq_id, oldest first.

Each data table numbers its rows from its own sequence (`seq_<table>`), and the agent's one
writer thread commits them in order, so a reader that remembers the last seq_id it saw and
asks for what follows gets every row once. Gaps in the numbers are rows that never committed
(a failed write burns its seq_ids) or that retention already deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from coral_ebpf.storage.schema import GRPC_METRICS, HTTP_METRICS, SPANS, SQL_METRICS, TableSpec

# The pull API's row types and the tables they read (traces: every stored span).
PULL_TABLES: dict[str, TableSpec] = {
    "http": HTTP_METRICS,
    "grpc": GRPC_METRICS,
    "sql": SQL_METRICS,
    "traces": SPANS,
}


@dataclass(frozen=True)
class RowBatch:
    kind: str
    rows: list[dict[str, Any]]  # column name -> value; timestamps as unix ns, JSON as text
    max_seq_id: int  # the largest seq_id returned, or the start seq_id when none was
    more: bool  # rows past the limit are waiting


def _select_list(spec: TableSpec) -> str:
    parts = ["seq_id"]
    for column in spec.columns:
        if column.sql.startswith("TIMESTAMP"):
            parts.append(f"epoch_ns({column.name}) AS {column.name}")
        elif column.sql.startswith("JSON"):
            parts.append(f"{column.name}::VARCHAR AS {column.name}")
        else:
            parts.append(column.name)
    return ", ".join(parts)


_SELECTS = {kind: _select_list(spec) for kind, spec in PULL_TABLES.items()}


def rows_after(
    connection: duckdb.DuckDBPyConnection,
    kind: str,
    start_seq_id: int,
    limit: int,
    service_names: Sequence[str] = (),
) -> RowBatch:
    """Up to `limit` rows of `kind` with seq_id > `start_seq_id`, in seq_id order."""
    spec = PULL_TABLES[kind]
    args: dict[str, Any] = {"start": start_seq_id, "limit": limit + 1}
    where = "seq_id > $start"
    if service_names:
        where += " AND service_name IN (SELECT unnest($services))"
        args["services"] = list(service_names)
    cursor = connection.execute(
        f"SELECT {_SELECTS[kind]} FROM {spec.name} WHERE {where} ORDER BY seq_id LIMIT $limit", args
    )
    names = [d[0] for d in cursor.description]
    fetched = cursor.fetchall()
    more = len(fetched) > limit
    rows = [dict(zip(names, row, strict=True)) for row in fetched[:limit]]
    max_seq_id = rows[-1]["seq_id"] if rows else start_seq_id
    return RowBatch(kind, rows, max_seq_id, more)


@dataclass(frozen=True)
class SeqRange:
    kind: str
    min_seq_id: int  # 0 when the table is empty
    max_seq_id: int
    rows: int
    oldest_ns: int
    newest_ns: int


def seq_ranges(connection: duckdb.DuckDBPyConnection) -> list[SeqRange]:
    """Per row type: the seq_ids and times still stored."""
    ranges = []
    for kind, spec in PULL_TABLES.items():
        row = connection.execute(
            f"SELECT coalesce(min(seq_id), 0), coalesce(max(seq_id), 0), count(*), "
            f"coalesce(epoch_ns(min({spec.time_column})), 0), coalesce(epoch_ns(max({spec.time_column})), 0) "
            f"FROM {spec.name}"
        ).fetchone()
        assert row is not None
        ranges.append(SeqRange(kind, int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4])))
    return ranges


def min_seq_id(connection: duckdb.DuckDBPyConnection, kind: str) -> int:
    row = connection.execute(f"SELECT coalesce(min(seq_id), 0) FROM {PULL_TABLES[kind].name}").fetchone()
    return int(row[0]) if row else 0
