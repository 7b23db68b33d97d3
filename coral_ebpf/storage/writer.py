"""`Storage`: the agent's DuckDB file, written by one thread from a write-ahead spool.

Request threads never touch the database. `submit()` appends a `Batch` to the spool
(`storage/spool.py`) and returns once it is fsynced (many requests share one fsync), so an
acknowledged request survives SIGKILL, a crash or a power loss. The same batch is queued in
memory for the writer thread, which inserts it and stores the spool position it applied in the
same DuckDB transaction (`storage/position.py`); at start, the records past that position are
replayed, so nothing is applied twice or missed. With `storage.spool_max_bytes: 0` there is no
spool: an acknowledged batch is then only in memory until written.

Refusals, which the receiver turns into 429/503 so that the sender keeps the data:
- `WriteQueueFullError` (429): `queue_max_batches` batches are accepted and not yet written
  (counting those the writer is writing), or the spool is full;
- `StorageUnavailableError` (503): the spool or the database cannot write (disk full, I/O error,
  read-only file system). The storage is then `degraded`, with the error and since when; the
  writer retries with back-off (reopening the database if DuckDB invalidated it) and accepts
  again by itself once a write succeeds;
- `StorageClosedError` (503): stopping or stopped.

A batch DuckDB refuses for its content (a conversion or constraint error) is a different thing:
it is set aside alone (`rows_rejected`), the rest of its transaction is written, and the spool
position moves past it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from coral_ebpf.storage import faults
from coral_ebpf.storage.batch import Batch, BatchDecodeError, decode_batch, encode_batch
from coral_ebpf.storage.database import open_for_writing, read_metadata, use_database, wal_path
from coral_ebpf.storage.inserts import SpanWindow, insert_table
from coral_ebpf.storage.position import read_applied_seq, write_applied_seq
from coral_ebpf.storage.retention import delete_expired
from coral_ebpf.storage.schema import METRIC_TABLES, SPANS, TABLES
from coral_ebpf.storage.spool import RecordRef, Spool, SpoolFullError, SpoolWriteError
from coral_ebpf.storage.umask import PrivateUmask

if TYPE_CHECKING:
    from coral_ebpf.storage.settings import StorageSettings

__all__ = ["Batch", "Storage", "StorageClosedError", "StorageUnavailableError", "WriteQueueFullError"]

log = logging.getLogger(__name__)

# The most rows one write takes (several of the file's row groups, `database.ROW_GROUP_SIZE`): when
# the writer falls behind, the queue backs up and bigger writes share the per-transaction costs (the
# deduplication scan, the commit's sync) over more rows.
MAX_ROWS_PER_WRITE = 122_880
# How long the writer sleeps at most between looks at its control flags.
_POLL_SECONDS = 0.25
_MAX_BACKOFF_SECONDS = 5.0
# Failures of the storage itself (retry, never drop) as opposed to a batch DuckDB refuses.
_STORAGE_ERRORS = (duckdb.IOException, duckdb.OutOfMemoryException, duckdb.FatalException, duckdb.InternalException)
_STORAGE_ERROR_TEXT = (
    "invalidated",
    "No space left",
    "Read-only file system",
    "Input/output error",
    "I/O error",
    "Disk quota exceeded",
    "Could not write file",
)


class WriteQueueFullError(Exception):
    """The write queue or the spool is full; retry later."""


class StorageClosedError(Exception):
    """The storage is stopping or stopped; nothing more is accepted."""


class StorageUnavailableError(StorageClosedError):
    """The spool or the database cannot write right now (disk full, I/O error); retry later."""


def is_storage_failure(exc: BaseException) -> bool:
    """True when `exc` says the storage cannot write, False when DuckDB refused the data itself."""
    return isinstance(exc, _STORAGE_ERRORS) or any(text in str(exc) for text in _STORAGE_ERROR_TEXT)


_OS_ERROR_NAMES = {
    "No space left on device": "ENOSPC",
    "Read-only file system": "EROFS",
    "Input/output error": "EIO",
    "Disk quota exceeded": "EDQUOT",
}


def summarize_storage_error(exc: BaseException) -> str:
    """The operating system's reason first (it is what a person acts on), then DuckDB's message."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for reason, name in _OS_ERROR_NAMES.items():
        if reason in text:
            return f"{reason} ({name}): {text}"
    return text


@dataclass(frozen=True)
class _Queued:
    seq: int
    batch: Batch


@dataclass
class _Counters:
    batches_written: int = 0
    rows_written: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    duplicate_spans_dropped: int = 0
    write_errors: int = 0
    rows_rejected: int = 0
    rows_lost: int = 0
    reopens: int = 0
    last_error: str = ""
    last_write: float | None = None
    last_cleanup: float | None = None
    rows_expired: int = 0


class Storage:
    """The DuckDB file, its spool and its writer thread (a `Component`)."""

    name = "storage"

    def __init__(self, settings: StorageSettings, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.path: Path = settings.path
        self._clock = wall_clock
        self._queue: queue.Queue[_Queued] = queue.Queue()
        self._spool: Spool | None = (
            Spool(settings.spool_directory, settings.spool_max_bytes, wall_clock=wall_clock)
            if settings.spool_max_bytes
            else None
        )
        self._next_seq = 1  # without a spool: in-memory sequence numbers
        self._order_lock = threading.Lock()
        self._applied_seq = 0
        self._replay: deque[RecordRef] = deque()
        self._replayed = threading.Event()  # set once every recovered spool record is in the database
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._span_window: SpanWindow | None = None
        self._reader_root: duckdb.DuckDBPyConnection | None = None
        self._reader_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._stopping = threading.Event()
        self._abandon_at: float | None = None
        self._cleanup_requested = threading.Event()
        self._done = threading.Condition()
        self._submitted = 0
        self._completed = 0
        self._in_flight = 0  # accepted (or being accepted), not yet written
        self._bytes_in_flight = 0
        self._write_at_bytes: int | None = None
        self._umask = PrivateUmask()
        self._counters = _Counters()
        self._observers: list[Callable[[Mapping[str, pa.Table]], None]] = []
        self._state = "created"
        self._since = self._clock()
        self._db_problem = ""
        self._db_problem_since: float | None = None
        self.session_id = ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._umask.acquire()
        try:
            self._open_database()
            assert self._connection is not None
            self._replay = self._recover_spool()
        except BaseException:
            self._close()
            raise
        self._accepting = True
        self._set_state("running")
        self._thread = threading.Thread(target=self._run, name="storage-writer", daemon=True)
        self._thread.start()
        log.info(
            "storage open",
            extra={
                "fields": {
                    "path": str(self.path),
                    "session_id": self.session_id,
                    "spool": str(self._spool.directory) if self._spool else "off",
                    "replaying_batches": len(self._replay),
                }
            },
        )

    def _open_database(self) -> None:
        self._connection = open_for_writing(self.path, self.settings.memory_limit)
        self.session_id = read_metadata(self._connection)["session_id"]
        self._applied_seq = read_applied_seq(self._connection)
        self._span_window = SpanWindow.for_table(self._connection)
        with self._reader_lock:
            self._reader_root = self._connection.cursor()

    def _recover_spool(self) -> deque[RecordRef]:
        """The spool's records past the applied position; the writer applies them before anything new."""
        if self._spool is None:
            self._next_seq = self._applied_seq + 1
            return deque()
        pending = deque(self._spool.recover(self._applied_seq))
        self._spool.release_through(self._applied_seq)
        if pending:
            log.info(
                "replaying acknowledged batches not yet in the database", extra={"fields": {"batches": len(pending)}}
            )
        return pending

    def _replay_spool(self) -> None:
        """Apply the recovered records in writes of up to MAX_ROWS_PER_WRITE rows, reading them as it goes."""
        assert self._spool is not None
        while self._replay and not (self._stopping.is_set() and self._gave_up()):
            chunk: list[_Queued] = []
            rows = 0
            while self._replay and rows < MAX_ROWS_PER_WRITE:
                ref = self._replay.popleft()
                try:
                    batch = decode_batch(self._spool.read(ref))
                except (BatchDecodeError, SpoolWriteError, OSError) as exc:
                    log.error(
                        "spool record cannot be read; skipped", extra={"fields": {"seq": ref.seq, "error": str(exc)}}
                    )
                    continue
                chunk.append(_Queued(ref.seq, batch))
                rows += batch.rows
            if chunk:
                with self._done:  # counted like submitted batches, so that flush() waits for them too
                    self._submitted += len(chunk)
                    self._in_flight += len(chunk)
                    self._bytes_in_flight += sum(item.batch.nbytes for item in chunk)
                self._apply(chunk)

    def wait_replayed(self, timeout: float) -> bool:
        """Wait until the spool records recovered at start are in the database; False on timeout.

        The transform reads which series are stored (its restart baseline) after this, so that
        acknowledged data still in the spool counts as stored too.
        """
        return self._replayed.wait(timeout)

    def stop(self, timeout: float) -> None:
        """Refuse new batches, write everything queued, checkpoint and close within `timeout`."""
        with self._done:  # no append() is between its check and its put once this is set
            self._accepting = False
        if self._thread is None:
            return
        self._set_state("stopping")
        self._abandon_at = time.monotonic() + max(timeout - 0.5, 0.1)
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "storage writer did not finish in time",
                extra={"fields": {"queued_batches": self._queue.qsize(), "kept_in_spool": self._spool is not None}},
            )
            return
        self._thread = None
        self._close()
        self._set_state("stopped")

    def _close(self) -> None:
        with self._reader_lock:
            connections, self._reader_root = (self._reader_root, self._connection), None
        self._connection = None
        for connection in connections:
            if connection is not None:
                try:
                    connection.close()
                except duckdb.Error as exc:
                    log.warning("closing the database failed", extra={"fields": {"error": str(exc)}})
        if self._spool is not None:
            self._spool.close()
        self._umask.release()

    def _set_state(self, state: str) -> None:
        self._state = state
        self._since = self._clock()

    # -- producers -------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self._accepting

    def submit(self, batch: Batch) -> None:
        """Accept `batch` durably: return once it is in the spool and synced; raise if refused."""
        self.wait_durable(self.append(batch))

    def append(self, batch: Batch) -> int:
        """Queue `batch` (in the spool, not yet synced) without blocking; return its sequence number.

        Split from `wait_durable` so a caller can append under its own lock and wait outside it.
        """
        self._reserve(batch)
        try:
            if self._spool is None:
                with self._order_lock:
                    seq = self._next_seq
                    self._next_seq += 1
                    self._enqueue(_Queued(seq, batch))
                return seq
            payload = encode_batch(batch)
            seq = self._spool.append(payload, lambda seq: self._enqueue(_Queued(seq, batch)))
        except SpoolFullError as exc:
            self._unreserve(batch)
            raise WriteQueueFullError(str(exc)) from None
        except SpoolWriteError as exc:
            self._unreserve(batch)
            raise StorageUnavailableError(str(exc)) from None
        except BaseException:
            self._unreserve(batch)
            raise
        faults.crash_point("after-spool-write")
        return seq

    def wait_durable(self, seq: int) -> None:
        """Return once batch `seq` would survive a crash (at once without a spool)."""
        if self._spool is None:
            return
        try:
            self._spool.wait_durable(seq)
        except SpoolWriteError as exc:
            raise StorageUnavailableError(str(exc)) from None
        faults.crash_point("after-spool-sync")

    def _reserve(self, batch: Batch) -> None:
        with self._done:
            if not self._accepting:
                raise StorageClosedError(f"storage is {self._state}")
            if self._db_problem:
                raise StorageUnavailableError(f"the database cannot be written: {self._db_problem}")
            if self._in_flight >= self.settings.queue_max_batches:
                raise WriteQueueFullError(
                    f"write queue full ({self.settings.queue_max_batches} batches accepted and not yet written)"
                )
            self._in_flight += 1
            self._bytes_in_flight += batch.nbytes

    def _unreserve(self, batch: Batch) -> None:
        with self._done:
            self._in_flight -= 1
            self._bytes_in_flight -= batch.nbytes

    def _enqueue(self, item: _Queued) -> None:
        with self._done:
            self._submitted += 1
        self._queue.put_nowait(item)

    def write_at_bytes(self, nbytes: int | None) -> None:
        """Start a write once `nbytes` of batches are waiting, before a row group is full (None: rows and time only).

        The memory budget sets it to part of its share for data in flight, so that the batches a write
        gathers never take the whole share and senders are refused while the writer waits for more.
        """
        self._write_at_bytes = nbytes

    @property
    def bytes_in_flight(self) -> int:
        """Arrow bytes of the batches accepted and not yet written (for the memory budget)."""
        return self._bytes_in_flight

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every batch submitted so far is written (or set aside); True if it was."""
        deadline = time.monotonic() + timeout
        with self._done:
            target = self._submitted
            while self._completed < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._thread is None or not self._thread.is_alive()):
                    return self._completed >= target
                self._done.wait(min(remaining, _POLL_SECONDS))
        return True

    def run_cleanup(self, timeout: float = 30.0) -> bool:
        """Ask the writer to delete expired rows now and wait for it (used by tests and tools)."""
        before = self._counters.last_cleanup
        self._cleanup_requested.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._counters.last_cleanup != before:
                return True
            time.sleep(0.02)
        return False

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the same database for another thread (reads see committed data)."""
        with self._reader_lock:
            if self._reader_root is None:
                raise StorageClosedError("storage is not open")
            return use_database(self._reader_root.cursor())

    # -- writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        next_cleanup = time.monotonic() + self.settings.cleanup_interval
        try:
            if self._replay:
                self._replay_spool()
            self._replayed.set()
            while True:
                items = self._collect()
                if items:
                    self._apply(items)
                if self._cleanup_requested.is_set() or time.monotonic() >= next_cleanup:
                    self._cleanup_requested.clear()
                    self._cleanup()
                    next_cleanup = time.monotonic() + self.settings.cleanup_interval
                if self._stopping.is_set() and (self._queue.empty() or self._gave_up()):
                    break
            self._checkpoint()
        except Exception as exc:  # a bug here must not leave the agent acknowledging data it cannot store
            self._accepting = False
            self._set_state("failed")
            self._counters.last_error = f"writer failed: {exc}"
            log.exception("storage writer failed; no more data is accepted")
            with self._done:
                self._done.notify_all()

    def _gave_up(self) -> bool:
        return self._abandon_at is not None and time.monotonic() >= self._abandon_at

    def _collect(self) -> list[_Queued]:
        """Take what is queued (waiting up to `flush_interval` for more); it stays counted in flight."""
        try:
            first = self._queue.get(timeout=0.0 if self._stopping.is_set() else _POLL_SECONDS)
        except queue.Empty:
            return []
        items, rows, nbytes = [first], first.batch.rows, first.batch.nbytes
        deadline = time.monotonic() + self.settings.flush_interval
        # Waiting for a full row group must not hold so much that the queue or the memory budget
        # refuses senders while the writer idles: then write what is there, in a smaller transaction.
        most_items = max(1, self.settings.queue_max_batches // 2)
        most_bytes = self._write_at_bytes
        while rows < MAX_ROWS_PER_WRITE and len(items) < most_items and (most_bytes is None or nbytes < most_bytes):
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0 or self._stopping.is_set():
                    item = self._queue.get_nowait()
                else:  # in slices, so that a stop does not wait out a long flush_interval
                    item = self._queue.get(timeout=min(remaining, _POLL_SECONDS))
            except queue.Empty:
                if remaining > _POLL_SECONDS and not self._stopping.is_set():
                    continue
                break
            items.append(item)
            rows += item.batch.rows
            nbytes += item.batch.nbytes
        return items

    def _apply(self, items: list[_Queued]) -> None:
        """Write `items` in one transaction; retry storage failures, set aside refused content."""
        delay = 0.1
        while True:
            pending = [item for item in items if item.seq > self._applied_seq]  # a reopen may show some applied
            try:
                if pending:
                    self._write_transaction(pending)
                break
            except Exception as exc:  # DuckDB's, or Arrow's for tables that do not fit their table
                if not is_storage_failure(exc):
                    self._note_error(exc, len(items))
                    if len(items) == 1:
                        self._reject(items[0], str(exc))
                    else:
                        for item in items:  # find the batch that cannot be stored; keep the rest
                            self._apply([item])
                        return
                    break
                self._degrade(exc, len(items))
                if self._stopping.is_set() and self._gave_up():
                    self._give_up(items, str(exc))
                    return
                time.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_SECONDS)
                self._reopen_if_invalidated(exc)
        self._recovered()
        self._mark_completed(items)

    def _write_transaction(self, items: list[_Queued], *, rows: bool = True) -> None:
        connection = self._connection
        if connection is None:
            raise duckdb.IOException("the database is not open (reopening after a failure)")
        grouped: dict[str, list[pa.Table]] = {}
        for item in items if rows else ():
            for name, table in item.batch.tables.items():
                if table.num_rows:
                    grouped.setdefault(name, []).append(table)
        through = max(item.seq for item in items)
        connection.execute("BEGIN TRANSACTION")
        try:
            written: dict[str, tuple[int, int]] = {}
            committed: dict[str, pa.Table] = {}
            for name, tables in grouped.items():
                combined = committed[name] = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
                written[name] = (combined.num_rows, insert_table(connection, name, combined, self._span_window))
            write_applied_seq(connection, through)
            faults.crash_point("before-commit")
            connection.execute("COMMIT")
        except BaseException:
            try:
                connection.execute("ROLLBACK")
            except duckdb.Error:
                log.debug("rollback after a failed write also failed", exc_info=True)
            raise
        self._applied_seq = through
        faults.crash_point("after-commit")
        if self._spool is not None:
            self._spool.release_through(through)
        if SPANS.name in written and self._span_window is not None:
            self._span_window.refresh(connection)
        counters = self._counters
        for name, (offered, inserted) in written.items():
            counters.rows_written[name] += inserted
            if name == SPANS.name:
                counters.duplicate_spans_dropped += offered - inserted
        if rows:
            counters.batches_written += len(items)
        counters.last_write = self._clock()
        self._notify_committed(committed)

    def on_commit(self, observer: Callable[[Mapping[str, pa.Table]], None]) -> None:
        """Call `observer` (on the writer thread) with the metric tables of every committed write.

        Spans are left out: they may be deduplicated on insert, so what was offered is not what was stored.
        """
        self._observers.append(observer)

    def _notify_committed(self, committed: dict[str, pa.Table]) -> None:
        metrics = {name: table for name, table in committed.items() if name in METRIC_TABLES}
        if not metrics:
            return
        for observer in self._observers:
            try:
                observer(metrics)
            except Exception:  # an observer's bug must not stop the writer
                log.exception("a commit observer failed")

    def _reject(self, item: _Queued, reason: str) -> None:
        """A batch DuckDB refuses for its content: count it and move the spool position past it."""
        self._counters.rows_rejected += item.batch.rows
        log.error(
            "batch refused by the database and set aside", extra={"fields": {"rows": item.batch.rows, "reason": reason}}
        )
        delay = 0.1
        while not (self._stopping.is_set() and self._gave_up()):
            try:
                self._write_transaction([item], rows=False)
                return
            except duckdb.Error as exc:
                self._degrade(exc, 1)
                time.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_SECONDS)
                self._reopen_if_invalidated(exc)

    def _give_up(self, items: list[_Queued], reason: str) -> None:
        """Stopping while the database cannot write: the spool keeps the batches for the next start."""
        rows = sum(item.batch.rows for item in items)
        if self._spool is None:
            self._counters.rows_lost += rows
            log.error(
                "stopping: batch could not be stored and is lost", extra={"fields": {"rows": rows, "reason": reason}}
            )
        else:
            log.warning(
                "stopping: batch not yet in the database; it stays in the spool and is written at the next start",
                extra={"fields": {"rows": rows, "reason": reason}},
            )
        self._mark_completed(items)
        while True:  # the rest of the queue too
            try:
                rest = self._queue.get_nowait()
            except queue.Empty:
                return
            self._give_up([rest], reason)

    def _degrade(self, exc: BaseException, batches: int) -> None:
        self._note_error(exc, batches)
        if not self._db_problem:
            self._db_problem_since = self._clock()
            log.error(
                "the database cannot be written; refusing new data until it can (nothing accepted is dropped)",
                extra={"fields": {"error": str(exc)}},
            )
        self._db_problem = summarize_storage_error(exc)

    def _recovered(self) -> None:
        if self._db_problem:
            log.info("the database is writable again", extra={"fields": {"was": self._db_problem}})
            self._db_problem, self._db_problem_since = "", None

    def _reopen_if_invalidated(self, exc: BaseException) -> None:
        """DuckDB invalidates a database after a fatal write error; only a new connection recovers it."""
        if (
            self._connection is not None
            and not isinstance(exc, duckdb.FatalException)
            and "invalidated" not in str(exc)
        ):
            return
        with self._reader_lock:
            old, self._reader_root = (self._reader_root, self._connection), None
        self._connection = None
        for connection in old:
            if connection is not None:
                try:
                    connection.close()
                except duckdb.Error:
                    log.debug("closing an invalidated connection failed", exc_info=True)
        try:
            self._open_database()
        except Exception as reopen_error:  # the next attempt tries again
            self._connection = None
            self._note_error(reopen_error, 0)
            return
        self._counters.reopens += 1
        log.info("database reopened after a failure", extra={"fields": {"applied_seq": self._applied_seq}})

    def _note_error(self, exc: BaseException, batches: int) -> None:
        self._counters.write_errors += 1
        self._counters.last_error = str(exc)
        log.warning("database write failed", extra={"fields": {"error": str(exc), "batches": batches}})

    def _mark_completed(self, items: list[_Queued]) -> None:
        with self._done:
            self._completed += len(items)
            self._in_flight -= len(items)
            self._bytes_in_flight -= sum(item.batch.nbytes for item in items)
            self._done.notify_all()

    def _cleanup(self) -> None:
        if self._connection is None:
            return
        try:
            now = self._clock()
            expired = delete_expired(self._connection, now - self.settings.retention, now + self.settings.retention)
            self._connection.execute("CHECKPOINT")
        except duckdb.Error as exc:
            self._note_error(exc, 0)
            return
        self._counters.rows_expired += sum(expired.values())
        self._counters.last_cleanup = self._clock()
        if any(expired.values()):
            log.info("expired rows deleted", extra={"fields": {k: v for k, v in expired.items() if v}})

    def _checkpoint(self) -> None:
        if self._connection is None:
            return
        try:
            self._connection.execute("CHECKPOINT")
        except duckdb.Error as exc:
            log.warning(
                "final checkpoint failed; the WAL is replayed on next open", extra={"fields": {"error": str(exc)}}
            )

    # -- status ----------------------------------------------------------------------------

    def problem(self) -> tuple[str, float] | None:
        """What keeps the storage from writing, and since when (None when it writes)."""
        if self._db_problem:
            return f"database: {self._db_problem}", self._db_problem_since or self._clock()
        spool_problem = self._spool.problem if self._spool is not None else None
        if spool_problem is not None:
            return spool_problem.message, spool_problem.since
        return None

    def status(self) -> dict[str, Any]:
        counters = self._counters
        problem = self.problem()
        state, since = self._state, self._since
        document: dict[str, Any] = {}
        if problem is not None and state == "running":
            state, since = "degraded", problem[1]
            document["reason"] = f"{problem[0]}; new data is refused (503) until writing works again"
        return {
            "state": state,
            "since": since,
            **document,
            "path": str(self.path),
            "session_id": self.session_id,
            "queue_depth": self._in_flight,
            "queue_capacity": self.settings.queue_max_batches,
            "bytes_in_flight": self._bytes_in_flight,
            "applied_seq": self._applied_seq,
            "replay_pending": len(self._replay),
            "spool": self._spool.status() if self._spool is not None else None,
            "batches_written": counters.batches_written,
            "rows_written": dict(counters.rows_written),
            "duplicate_spans_dropped": counters.duplicate_spans_dropped,
            "last_write": counters.last_write,
            "write_errors": counters.write_errors,
            "last_error": counters.last_error,
            "rows_rejected": counters.rows_rejected,
            "rows_lost": counters.rows_lost,
            "database_reopens": counters.reopens,
            "retention_seconds": self.settings.retention,
            "memory_limit_bytes": self.settings.memory_limit,
            "last_cleanup": counters.last_cleanup,
            "rows_expired": counters.rows_expired,
            "db_size_bytes": _size(self.path),
            "wal_size_bytes": _size(wal_path(self.path)),
        }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
