"""Opening the DuckDB file: private permissions, schema, metadata, and errors a person can act on.

DuckDB lets one process hold the file open for writing (the running agent). While it runs,
queries go through the agent; when it does not, the CLI opens the file read-only.

DuckDB creates the file and its write-ahead log with mode 0666 & ~umask, and deletes and
re-creates the WAL at every checkpoint, so a chmod after opening is not enough: the writer
keeps the process umask at 077 while the database is open (`storage/umask.py`).
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import duckdb

from coral_ebpf.errors import CoralError
from coral_ebpf.safe_paths import chmod_private, prepare_private_dir, refuse_symlink
from coral_ebpf.storage.schema import SCHEMA_VERSION, ddl_statements, migration_statements


class DatabaseError(CoralError):
    """The database file cannot be opened or used."""


class DatabaseLockedError(DatabaseError):
    """Another process (normally a running agent) holds the database file."""


class DatabaseMissingError(DatabaseError):
    """There is no database file yet (the agent never ran with this storage.path)."""


def wal_path(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


_LOCK_HOLDER = re.compile(r"PID (\d+)")


def _translate(exc: duckdb.Error, path: Path, read_only: bool) -> DatabaseError:
    text = str(exc)
    if "Could not set lock" in text or "Conflicting lock" in text:
        found = _LOCK_HOLDER.search(text)
        pids = [int(found.group(1))] if found else lock_holders(path)
        described = [describe_process(pid) for pid in pids]
        who = ", ".join(f"process {pid} ({command})" for pid, command in zip(pids, described, strict=True))
        agent = any(_is_agent(command) for command in described)
        if read_only:
            hint = (
                "a coral-ebpf agent is running with this database: query it through the agent "
                "('coral-ebpf query ...' with the same --config), or stop it first"
                if agent or not pids
                else "wait for that process to finish, or stop it"
            )
        elif agent:
            hint = "another coral-ebpf agent is running: stop it, or give this one another storage.path"
        elif pids:
            hint = "that process (not an agent) has the database open: let it finish or stop it, then start again"
        else:
            hint = f"find the process holding the file (fuser -v {path}), stop it, and start again"
        return DatabaseLockedError(f"database {path} is in use by {who or 'another process'}", hint)
    if "not a valid DuckDB database" in text or "Corrupt" in text or "corrupt" in text:
        return DatabaseError(
            f"database {path} is damaged or is not a DuckDB file: {text}",
            f"move it aside (mv {path} {path}.broken); the agent creates a new one on start",
        )
    if "version" in text.lower() and "storage" in text.lower():
        return DatabaseError(
            f"database {path} was written by an incompatible DuckDB version: {text}",
            f"move it aside (mv {path} {path}.old) so the agent creates a new one",
        )
    if "Permission denied" in text:
        return DatabaseError(f"cannot open database {path}: permission denied", "run as root (sudo)")
    return DatabaseError(f"cannot open database {path}: {text}")


def lock_holders(path: Path) -> list[int]:
    """Pids holding a POSIX or flock lock on `path`, from /proc/locks (matched by device and inode)."""
    try:
        info = path.stat()
        lines = Path("/proc/locks").read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return []
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    pids = []
    for line in lines:
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF" ("->" marks a waiter and shifts the fields)
        if "->" in fields:
            continue
        if len(fields) >= 6 and fields[5] == wanted and fields[4].isdigit() and int(fields[4]) not in pids:
            pids.append(int(fields[4]))
    return pids


def describe_process(pid: int) -> str:
    """The command line of `pid`, or why it is unknown."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return "no longer running"
    text = " ".join(word.decode(errors="replace") for word in words if word)
    return text[:200] or "unknown command"


def _is_agent(command: str) -> bool:
    words = command.split()
    return any("coral-ebpf" in word or "coral_ebpf" in word for word in words) and "start" in words


def make_private(path: Path) -> None:
    """Mode 0600 on the database file and its WAL (files left by an older run may be wider).

    By descriptor, never following a symlink (`safe_paths.chmod_private`).
    """
    for candidate in (path, wal_path(path)):
        chmod_private(candidate, 0o600)


def _prepare_parent(path: Path) -> None:
    """The database's directory exists (created 0700) and may be trusted; the file and WAL are not symlinks.

    DuckDB opens the file by name, so a symlink planted there would redirect root's writes.
    """
    try:
        prepare_private_dir(path.parent, "database directory", chmod=False)
    except PermissionError as exc:
        raise DatabaseError(
            f"cannot create directory {path.parent} for the database: permission denied",
            "run as root (sudo), or set storage.path to a directory you own",
        ) from exc
    refuse_symlink(path, "database")
    refuse_symlink(wal_path(path), "database WAL")


ALLOCATOR_FLUSH_BYTES = 8 * 1024 * 1024
# The name the writer's connection attaches the file under (its default catalog, see `use_database`).
CATALOG = "coral"
# Rows per row group of the file the agent writes (DuckDB's default: 122,880). A transaction that
# fills a row group is written straight to the file, compressed once; a smaller one goes to the WAL
# and is read back and compressed again at the next checkpoint. Under the memory budget a write
# gathers ~30,000 spans (half the in-flight share), so with the default every write took the slow
# path. Measured on this machine, 30,720-span transactions: 120,537 rows per CPU-second with the
# default, 330,366 with 16,384 (the file ~15 % larger); 122,880-span ones: 364,531. The size is an
# option of the attach, not stored in the file, so it holds for what this connection writes.
ROW_GROUP_SIZE = 16_384


def open_for_writing(path: Path, memory_limit: int | None = None) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the agent's database and bring its schema up to date.

    The file is attached to an in-memory instance under `CATALOG` (the only way to choose its row
    group size) and made the connection's default catalog; cursors of it need `use_database`.
    The caller must hold a `PrivateUmask` for as long as the connection writes.
    """
    _prepare_parent(path)
    config: dict[str, str | bool | int | float | list[str]] = {}
    if memory_limit is not None:
        config["memory_limit"] = f"{memory_limit}B"
    # DuckDB keeps memory its tasks freed cached in its allocator until a task's peak passes this
    # (default 128 MiB, above the agent's whole DuckDB share): lower, it goes back to the kernel
    # after each write instead of staying in the agent's private RSS.
    config["allocator_flush_threshold"] = f"{ALLOCATOR_FLUSH_BYTES}B"
    # Where DuckDB spills, as it does for a database opened by its path (an in-memory instance
    # would spill to ./.tmp, wherever the agent was started).
    config["temp_directory"] = str(path) + ".tmp"
    connection = duckdb.connect(":memory:", config=config)
    try:
        connection.execute(f"ATTACH ? AS {CATALOG} (ROW_GROUP_SIZE {ROW_GROUP_SIZE})", [str(path)])
        use_database(connection)
    except duckdb.Error as exc:
        connection.close()
        raise _translate(exc, path, read_only=False) from exc
    try:
        _migrate(connection)
        for statement in ddl_statements():
            connection.execute(statement)
        _init_metadata(connection, path)
        connection.execute("CHECKPOINT")
    except duckdb.Error as exc:
        connection.close()
        raise _translate(exc, path, read_only=False) from exc
    make_private(path)
    return connection


def use_database(connection: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Make the agent's file the default catalog of `connection` (a cursor starts in the in-memory one)."""
    connection.execute(f"USE {CATALOG}")
    return connection


def _migrate(connection: duckdb.DuckDBPyConnection) -> None:
    """Bring a database written by an older schema version up to SCHEMA_VERSION, in one transaction.

    A version this agent does not know how to migrate is left alone (`_init_metadata` refuses it).
    """
    has_metadata = connection.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'db_metadata'"
    ).fetchone()
    if not has_metadata or not has_metadata[0]:
        return
    row = connection.execute("SELECT value FROM db_metadata WHERE key = 'schema_version'").fetchone()
    if row is None or row[0] == SCHEMA_VERSION:
        return
    statements = migration_statements(row[0])
    if not statements:
        return
    connection.execute("BEGIN TRANSACTION")
    try:
        for statement in statements:
            connection.execute(statement)
        connection.execute("UPDATE db_metadata SET value = ? WHERE key = 'schema_version'", [SCHEMA_VERSION])
        connection.execute("COMMIT")
    except duckdb.Error:
        connection.execute("ROLLBACK")
        raise


def _init_metadata(connection: duckdb.DuckDBPyConnection, path: Path) -> None:
    rows = dict(connection.execute("SELECT key, value FROM db_metadata").fetchall())
    stored_version = rows.get("schema_version")
    if stored_version is not None and stored_version != SCHEMA_VERSION:
        raise DatabaseError(
            f"database {path} has schema version {stored_version}; this agent writes version {SCHEMA_VERSION}",
            f"move it aside (mv {path} {path}.v{stored_version}) so the agent creates a new one",
        )
    # A new session_id per database file tells a colony puller to reset its seq_id checkpoints.
    defaults = {"schema_version": SCHEMA_VERSION, "session_id": str(uuid.uuid4())}
    for key, value in defaults.items():
        if key not in rows:
            connection.execute("INSERT INTO db_metadata VALUES (?, ?)", [key, value])


def open_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """Open an existing database for queries while no agent holds it."""
    if not path.exists():
        raise DatabaseMissingError(
            f"no database at {path}: the agent has not stored any data there yet",
            "start the agent (sudo coral-ebpf start), or pass the --config whose storage.path holds the data",
        )
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise _translate(exc, path, read_only=True) from exc


def read_metadata(connection: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(connection.execute("SELECT key, value FROM db_metadata").fetchall())
