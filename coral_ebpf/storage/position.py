"""The spool position the database has applied, kept in the database itself.

The writer updates it in the same transaction as the rows it inserts, so after any crash the
database and its position agree: the records past it are exactly those to replay. One row in
a table of its own (no index: DuckDB handles an in-place update of an unindexed row best).
"""

from __future__ import annotations

import duckdb

TABLE = "coral_spool_position"


def read_applied_seq(connection: duckdb.DuckDBPyConnection) -> int:
    """The highest spool sequence number applied (0 for a new database); creates the table if missing."""
    connection.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (applied_seq UBIGINT NOT NULL)")
    row = connection.execute(f"SELECT max(applied_seq), count(*) FROM {TABLE}").fetchone()
    if row is None or row[1] == 0:
        connection.execute(f"INSERT INTO {TABLE} VALUES (0)")
        return 0
    return int(row[0])


def write_applied_seq(connection: duckdb.DuckDBPyConnection, seq: int) -> None:
    """Record `seq` as applied; call inside the transaction that inserts its rows."""
    connection.execute(f"UPDATE {TABLE} SET applied_seq = ?", [seq])
