"""The colony's DuckDB: the agents' rows, one checkpoint per (agent, type), gaps, poll state.

Data tables have the agent's columns (so the agent's RED and trace queries run on them
unchanged, `agent_id` telling the agents apart) plus the row's `agent_seq_id` and
`agent_session`; their primary key (agent_id, agent_session, agent_seq_id) makes a row that
arrives twice count once. Rows and the checkpoint that covers them commit in one transaction:
a colony killed mid-poll either kept both or neither. Views named like the Go colony's tables
(`beyla_http_metrics_buckets`, ... one row per latency bucket with `latency_bucket_ms`) serve
tools written for that schema.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from coral_ebpf.storage.database import DatabaseError, make_private, open_read_only
from coral_ebpf.storage.pull import PULL_TABLES
from coral_ebpf.storage.retention import utc_naive
from coral_ebpf.storage.schema import (
    BEYLA_TRACES_VIEW,
    RESOURCES,
    SPANS_VIEW,
    TableSpec,
    _create_table,
    arrow_array,
)

COLONY_SCHEMA_VERSION = "1"
_SOURCE_COLUMNS = ("agent_seq_id", "agent_session")


def _data_table_ddl(spec: TableSpec) -> str:
    columns = [f"{column.name} {column.sql}" for column in spec.columns]
    columns += ["agent_seq_id UBIGINT NOT NULL", "agent_session VARCHAR NOT NULL"]
    columns.append("PRIMARY KEY (agent_id, agent_session, agent_seq_id)")
    body = ",\n  ".join(columns)
    return f"CREATE TABLE IF NOT EXISTS {spec.name} (\n  {body}\n)"


def _bucket_view(kind: str, keys: str) -> str:
    """The Go colony's shape: one row per latency bucket (upper bound in ms; +Inf as infinity)."""
    table = PULL_TABLES[kind].name
    return f"""
CREATE OR REPLACE VIEW {table}_buckets AS
SELECT timestamp, agent_id, service_name, {keys},
       CASE WHEN i <= len(bounds_s) THEN bounds_s[i] * 1000 ELSE 'infinity'::DOUBLE END AS latency_bucket_ms,
       bucket_counts[i] AS count, attributes
FROM (SELECT *, generate_subscripts(bucket_counts, 1) AS i FROM {table})
"""


_STATE_DDL = (
    """CREATE TABLE IF NOT EXISTS colony_checkpoints (
  agent_id VARCHAR NOT NULL, data_type VARCHAR NOT NULL, session_id VARCHAR NOT NULL,
  last_seq_id UBIGINT NOT NULL, updated_at TIMESTAMP NOT NULL, PRIMARY KEY (agent_id, data_type))""",
    """CREATE TABLE IF NOT EXISTS colony_gaps (
  agent_id VARCHAR NOT NULL, data_type VARCHAR NOT NULL, session_id VARCHAR NOT NULL,
  from_seq_id UBIGINT NOT NULL, to_seq_id UBIGINT NOT NULL, detected_at TIMESTAMP NOT NULL,
  retries INTEGER NOT NULL, state VARCHAR NOT NULL, reason VARCHAR, recovered_rows UBIGINT NOT NULL,
  PRIMARY KEY (agent_id, data_type, session_id, from_seq_id))""",
    """CREATE TABLE IF NOT EXISTS colony_agents (
  agent_id VARCHAR PRIMARY KEY, address VARCHAR, session_id VARCHAR, last_attempt DOUBLE, last_success DOUBLE,
  last_error VARCHAR, consecutive_failures INTEGER NOT NULL DEFAULT 0, rows_stored UBIGINT NOT NULL DEFAULT 0,
  lag_rows UBIGINT, newest_row DOUBLE)""",
    "CREATE TABLE IF NOT EXISTS colony_metadata (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
)


def ddl_statements() -> list[str]:
    statements = list(_STATE_DDL)
    statements += _create_table(RESOURCES)  # empty: views join it; resources are not pulled
    statements += [_data_table_ddl(spec) for spec in PULL_TABLES.values()]
    # The agent's views, with the colony's agent_seq_id standing in for the agent table's seq_id.
    statements += [
        SPANS_VIEW.replace("SELECT s.seq_id,", "SELECT s.agent_seq_id AS seq_id,").replace(
            "EXCLUDE (seq_id,", "EXCLUDE (agent_seq_id,"
        ),
        BEYLA_TRACES_VIEW,
    ]
    statements += [
        _bucket_view("http", "http_method, http_route, http_status_code"),
        _bucket_view("grpc", "grpc_method, grpc_status_code"),
        _bucket_view("sql", "sql_operation, table_name"),
    ]
    return statements


@dataclass(frozen=True)
class Checkpoint:
    session_id: str
    last_seq_id: int


@dataclass(frozen=True)
class Gap:
    data_type: str
    session_id: str
    from_seq_id: int
    to_seq_id: int
    retries: int


def _arrow_table(spec: TableSpec, rows: Sequence[Mapping[str, Any]], session_id: str) -> pa.Table:
    arrays = [arrow_array([row[c.name] for row in rows], c.arrow) for c in spec.columns]
    arrays.append(pa.array([row["seq_id"] for row in rows], type=pa.uint64()))
    arrays.append(pa.array([session_id] * len(rows), type=pa.string()))
    names = [*spec.column_names, *_SOURCE_COLUMNS]
    return pa.Table.from_arrays(arrays, names=names)


class ColonyStore:
    """The colony database, opened for writing by the running colony (one process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # one write transaction at a time
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._connection = duckdb.connect(str(path))
        except duckdb.Error as exc:
            raise DatabaseError(f"cannot open the colony database {path}: {exc}") from exc
        for statement in ddl_statements():
            self._connection.execute(statement)
        self._connection.execute(
            "INSERT OR IGNORE INTO colony_metadata VALUES ('schema_version', ?)", [COLONY_SCHEMA_VERSION]
        )
        self._connection.execute("CHECKPOINT")
        make_private(path)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self._connection.cursor()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    # ------------------------------------------------------------------ checkpoints

    def checkpoints(self, agent_id: str) -> dict[str, Checkpoint]:
        cursor = self.cursor()
        rows = cursor.execute(
            "SELECT data_type, session_id, last_seq_id FROM colony_checkpoints WHERE agent_id = ?", [agent_id]
        ).fetchall()
        return {kind: Checkpoint(session, int(last)) for kind, session, last in rows}

    def reset_session(self, agent_id: str, session_id: str) -> None:
        """A new database on the agent: every checkpoint starts over (rows already stored stay)."""
        with self._lock:
            cursor = self.cursor()
            cursor.execute("BEGIN")
            cursor.execute("DELETE FROM colony_checkpoints WHERE agent_id = ?", [agent_id])
            cursor.executemany(
                "INSERT INTO colony_checkpoints VALUES (?, ?, ?, 0, now()::TIMESTAMP)",
                [[agent_id, kind, session_id] for kind in PULL_TABLES],
            )
            cursor.execute(
                "UPDATE colony_gaps SET state = 'abandoned', reason = 'the agent started a new database' "
                "WHERE agent_id = ? AND state = 'open'",
                [agent_id],
            )
            cursor.execute("COMMIT")

    def store(
        self,
        agent_id: str,
        session_id: str,
        batches: Mapping[str, Sequence[Mapping[str, Any]]],
        new_checkpoints: Mapping[str, int],
        gaps: Iterable[tuple[str, int, int, str, str | None]] = (),
    ) -> int:
        """Insert rows and move checkpoints in one transaction; rows already stored are skipped.

        `gaps`: (type, from, to, state, reason) to record. Returns the number of rows inserted.
        """
        inserted = 0
        with self._lock:
            cursor = self.cursor()
            cursor.execute("BEGIN")
            try:
                for kind, rows in batches.items():
                    if not rows:
                        continue
                    spec = PULL_TABLES[kind]
                    cursor.register("incoming", _arrow_table(spec, rows, session_id))
                    inserted += _insert(cursor, spec.name)
                    cursor.unregister("incoming")
                for kind, last in new_checkpoints.items():
                    cursor.execute(
                        "INSERT OR REPLACE INTO colony_checkpoints VALUES (?, ?, ?, ?, now()::TIMESTAMP)",
                        [agent_id, kind, session_id, last],
                    )
                for kind, first, last, state, reason in gaps:
                    cursor.execute(
                        "INSERT OR IGNORE INTO colony_gaps VALUES (?, ?, ?, ?, ?, now()::TIMESTAMP, 0, ?, ?, 0)",
                        [agent_id, kind, session_id, first, last, state, reason],
                    )
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        return inserted

    # ------------------------------------------------------------------ gaps

    def open_gaps(self, agent_id: str, session_id: str) -> list[Gap]:
        rows = (
            self.cursor()
            .execute(
                "SELECT data_type, session_id, from_seq_id, to_seq_id, retries FROM colony_gaps "
                "WHERE agent_id = ? AND session_id = ? AND state = 'open' ORDER BY from_seq_id",
                [agent_id, session_id],
            )
            .fetchall()
        )
        return [Gap(kind, session, int(first), int(last), int(retries)) for kind, session, first, last, retries in rows]

    def fill_gap(
        self, agent_id: str, gap: Gap, rows: Sequence[Mapping[str, Any]], state: str, reason: str | None
    ) -> int:
        """Store the rows found inside `gap` and update it (retries + 1, new state)."""
        wanted = [row for row in rows if gap.from_seq_id <= row["seq_id"] <= gap.to_seq_id]
        with self._lock:
            cursor = self.cursor()
            cursor.execute("BEGIN")
            try:
                spec = PULL_TABLES[gap.data_type]
                inserted = 0
                if wanted:
                    cursor.register("incoming", _arrow_table(spec, wanted, gap.session_id))
                    inserted = _insert(cursor, spec.name)
                    cursor.unregister("incoming")
                cursor.execute(
                    "UPDATE colony_gaps SET retries = retries + 1, state = ?, reason = coalesce(?, reason), "
                    "recovered_rows = recovered_rows + ? "
                    "WHERE agent_id = ? AND data_type = ? AND session_id = ? AND from_seq_id = ?",
                    [state, reason, inserted, agent_id, gap.data_type, gap.session_id, gap.from_seq_id],
                )
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        return inserted

    # ------------------------------------------------------------------ poll state and retention

    def record_poll(self, agent_id: str, address: str, **fields: Any) -> None:
        with self._lock:
            cursor = self.cursor()
            cursor.execute("INSERT OR IGNORE INTO colony_agents (agent_id) VALUES (?)", [agent_id])
            assignments = ", ".join(f"{name} = ?" for name in fields)
            cursor.execute(
                f"UPDATE colony_agents SET address = ?{', ' + assignments if fields else ''} WHERE agent_id = ?",
                [address, *fields.values(), agent_id],
            )

    def downsample(self, after: float, resolution: float, now: float | None = None) -> dict[str, tuple[int, int]]:
        """Merge metric rows older than `after` into `resolution` buckets; per type (rows merged, rows written)."""
        from coral_ebpf.colony.downsample import METRIC_KINDS, downsample_table

        cutoff = (time.time() if now is None else now) - after
        done = {}
        with self._lock:
            cursor = self.cursor()
            for kind in METRIC_KINDS:
                cursor.execute("BEGIN")
                try:
                    done[kind] = downsample_table(cursor, kind, cutoff, resolution)
                    cursor.execute("COMMIT")
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
        return done

    def delete_expired(self, retention: Mapping[str, float], now: float | None = None) -> dict[str, int]:
        """Delete rows older than each type's retention; rows deleted per type."""
        now = time.time() if now is None else now
        deleted = {}
        with self._lock:
            cursor = self.cursor()
            for kind, spec in PULL_TABLES.items():
                cutoff = utc_naive(now - retention[kind])
                row = cursor.execute(
                    f"DELETE FROM {spec.name} WHERE {spec.time_column} < ? RETURNING 1", [cutoff]
                ).fetchall()
                deleted[kind] = len(row)
        return deleted


def _insert(cursor: duckdb.DuckDBPyConnection, table: str) -> int:
    """Insert the registered `incoming` rows, skipping any already stored; how many were new."""
    row = cursor.execute(f"INSERT OR IGNORE INTO {table} BY NAME SELECT * FROM incoming").fetchone()
    return int(row[0]) if row else 0


def status_document(connection: duckdb.DuckDBPyConnection, path: Path) -> dict[str, Any]:
    """Per agent: polls, lag, errors, session, rows, checkpoints and gaps; and the database size."""
    agents: dict[str, dict[str, Any]] = {}
    for row in connection.execute(
        "SELECT agent_id, address, session_id, last_attempt, last_success, last_error, consecutive_failures, "
        "rows_stored, lag_rows, newest_row FROM colony_agents ORDER BY agent_id"
    ).fetchall():
        (agent_id, address, session, attempt, success, error, failures, rows, lag_rows, newest) = row
        agents[agent_id] = {
            "agent_id": agent_id,
            "address": address,
            "session_id": session,
            "last_attempt": attempt,
            "last_success": success,
            "last_error": error,
            "consecutive_failures": failures,
            "rows_stored": rows,
            "lag_rows": lag_rows,
            "lag_seconds": None if success is None else round(time.time() - success, 3),
            "newest_row": newest,
            "checkpoints": {},
            "gaps": {"open": 0, "recovered": 0, "permanent": 0, "expired": 0, "abandoned": 0},
        }
    for agent_id, kind, session, last in connection.execute(
        "SELECT agent_id, data_type, session_id, last_seq_id FROM colony_checkpoints"
    ).fetchall():
        if agent_id in agents:
            agents[agent_id]["checkpoints"][kind] = {"session_id": session, "last_seq_id": last}
    for agent_id, state, count in connection.execute(
        "SELECT agent_id, state, count(*) FROM colony_gaps GROUP BY ALL"
    ).fetchall():
        if agent_id in agents:
            agents[agent_id]["gaps"][state] = count
    tables = {}
    for kind, spec in PULL_TABLES.items():
        found = connection.execute(f"SELECT count(*) FROM {spec.name}").fetchone()
        tables[kind] = int(found[0]) if found else 0
    size = sum(p.stat().st_size for p in (path, path.with_name(path.name + ".wal")) if p.exists())
    return {"database": {"path": str(path), "size_bytes": size, "rows": tables}, "agents": list(agents.values())}


def read_status_offline(path: Path) -> dict[str, Any]:
    """`colony status` while no colony runs: the state the last run left in the database."""
    connection = open_read_only(path)
    try:
        return status_document(connection, path)
    finally:
        connection.close()


def gaps_list(connection: duckdb.DuckDBPyConnection, agent_id: str | None = None) -> list[dict[str, Any]]:
    where = "WHERE agent_id = ?" if agent_id else ""
    rows = connection.execute(
        "SELECT agent_id, data_type, session_id, from_seq_id, to_seq_id, epoch(detected_at), retries, state, reason, "
        f"recovered_rows FROM colony_gaps {where} ORDER BY detected_at",
        [agent_id] if agent_id else [],
    ).fetchall()
    keys = (
        "agent_id",
        "type",
        "session_id",
        "from_seq_id",
        "to_seq_id",
        "detected_at",
        "retries",
        "state",
        "reason",
        "recovered_rows",
    )
    return [dict(zip(keys, row, strict=True)) for row in rows]
