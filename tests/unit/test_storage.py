"""Storage on a real DuckDB file: permissions, locking, queue limits, draining, retention, dedupe."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import coral_ebpf.storage.writer as writer_module
from coral_ebpf.consumer import ConsumerUnavailableError, QueueFullError
from coral_ebpf.storage import inserts
from coral_ebpf.storage.database import DatabaseError, DatabaseMissingError, open_read_only
from coral_ebpf.storage.writer import Batch, Storage, StorageClosedError, WriteQueueFullError
from coral_ebpf.transform.spans import SpanFlattener
from tests.helpers.beyla_otlp import beyla_resource, http_server_span, new_ids, trace_request
from tests.helpers.datapath import config_for, data_path
from tests.helpers.timing import eventually

NOW = time.time_ns()


def spans_request(count: int, start_ns: int = NOW) -> tuple[object, list[tuple[bytes, bytes]]]:
    ids = [new_ids() for _ in range(count)]
    spans = [http_server_span(t, s, start_ns=start_ns + i, duration_ns=1_000_000) for i, (t, s) in enumerate(ids)]
    return trace_request(beyla_resource("shop"), spans), ids


def count_spans(storage: Storage) -> int:
    row = storage.reader().execute("SELECT count(*) FROM otel_spans").fetchone()
    return int(row[0]) if row else 0


def test_database_file_and_wal_are_private(tmp_path: Path) -> None:
    state = tmp_path / "new" / "state"
    old_umask = os.umask(0o022)
    try:
        with data_path(state) as (storage, processor):
            request, _ = spans_request(10)
            processor.consume_traces(request)  # type: ignore[arg-type]
            storage.flush()
            wal = storage.path.with_name(storage.path.name + ".wal")
            assert wal.exists(), "a write before checkpoint leaves a WAL"
            assert stat.S_IMODE(wal.stat().st_mode) == 0o600
            assert stat.S_IMODE(storage.path.stat().st_mode) == 0o600
            assert stat.S_IMODE(state.stat().st_mode) == 0o700
            assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
        assert os.umask(0o022) == 0o022, "the previous umask comes back when storage stops"
    finally:
        os.umask(old_umask)


def test_existing_wide_file_is_narrowed(tmp_path: Path) -> None:
    with data_path(tmp_path) as (storage, _):
        path = storage.path
    os.chmod(path, 0o644)
    with data_path(tmp_path) as (storage, _):
        assert stat.S_IMODE(storage.path.stat().st_mode) == 0o600


def test_a_second_process_gets_a_clear_lock_error(tmp_path: Path) -> None:
    with data_path(tmp_path) as (storage, _):
        script = (
            "import sys\n"
            "from pathlib import Path\n"
            "from coral_ebpf.storage.database import open_read_only, open_for_writing, DatabaseLockedError\n"
            "for opener in (open_read_only, open_for_writing):\n"
            "    try:\n"
            "        opener(Path(sys.argv[1]))\n"
            "    except DatabaseLockedError as exc:\n"
            "        print(exc)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script, str(storage.path)], capture_output=True, text=True, timeout=60, check=True
        )
    lines = result.stdout.strip().splitlines()
    assert any("in use by process" in line for line in lines), result.stdout
    # The holder is this test process, not an agent: the message says what it is instead of blaming an agent.
    assert f"in use by process {os.getpid()} (" in result.stdout and "pytest" in result.stdout
    assert "not an agent" in result.stdout and "another coral-ebpf agent" not in result.stdout


def test_a_corrupt_file_is_reported_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "coral-ebpf.duckdb"
    path.write_bytes(b"this is not a database" * 100)
    storage = Storage(config_for(tmp_path).storage)
    with pytest.raises(DatabaseError) as caught:
        storage.start()
    assert "mv " in caught.value.hint and "not a DuckDB file" in caught.value.message


def test_missing_file_for_reading_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatabaseMissingError) as caught:
        open_read_only(tmp_path / "none.duckdb")
    assert "start the agent" in caught.value.hint


def test_session_id_is_kept_per_file_and_seq_ids_increase(tmp_path: Path) -> None:
    with data_path(tmp_path) as (storage, processor):
        first_session = storage.session_id
        processor.consume_traces(spans_request(5)[0])  # type: ignore[arg-type]
        storage.flush()
    with data_path(tmp_path) as (storage, processor):
        assert storage.session_id == first_session
        processor.consume_traces(spans_request(5)[0])  # type: ignore[arg-type]
        storage.flush()
        seq = [r[0] for r in storage.reader().execute("SELECT seq_id FROM otel_spans_raw ORDER BY seq_id").fetchall()]
    assert seq == list(range(1, 11))


@pytest.fixture
def stalled_writer(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Make every database write wait until the returned event is set (a disk that stalls)."""
    release = threading.Event()
    real_insert = inserts.insert_table  # what the writer imported, before the patch

    def slow_insert(*args: Any, **kwargs: Any) -> int:
        release.wait(60)
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(writer_module, "insert_table", slow_insert)
    yield release
    release.set()


def test_full_queue_refuses_the_request_and_a_retry_succeeds(tmp_path: Path, stalled_writer: threading.Event) -> None:
    with data_path(tmp_path, queue_max_batches=1, flush_interval="0s") as (storage, processor):
        processor.consume_traces(spans_request(3)[0])  # type: ignore[arg-type]  # fills the one slot
        time.sleep(0.3)  # the writer takes it out of the queue: it must still count against the bound
        refused_request, _ = spans_request(5)
        with pytest.raises(QueueFullError) as caught:
            processor.consume_traces(refused_request)  # type: ignore[arg-type]
        assert caught.value.retry_after == pytest.approx(1.0)
        assert processor.status()["requests_refused_queue_full"] == 1
        stalled_writer.set()
        storage.flush()
        assert count_spans(storage) == 3, "nothing of the refused request was kept"
        processor.consume_traces(refused_request)  # type: ignore[arg-type]  # the client's retry
        storage.flush()
        assert count_spans(storage) == 8


def test_submit_raises_storage_errors(tmp_path: Path, stalled_writer: threading.Event) -> None:
    storage = Storage(config_for(tmp_path, queue_max_batches=1, flush_interval="0s").storage)
    table = SpanFlattener("a").flatten(spans_request(1)[0]).table  # type: ignore[arg-type]
    with pytest.raises(StorageClosedError):
        storage.submit(Batch({"otel_spans_raw": table}))
    storage.start()
    try:
        storage.submit(Batch({"otel_spans_raw": table}))
        time.sleep(0.3)  # taken by the stalled writer, still counted until written
        assert storage.status()["queue_depth"] == 1
        with pytest.raises(WriteQueueFullError):
            storage.submit(Batch({"otel_spans_raw": table}))
        stalled_writer.set()
    finally:
        storage.stop(30)
    with pytest.raises(StorageClosedError):
        storage.submit(Batch({"otel_spans_raw": table}))
    with pytest.raises(ValueError, match="unknown table"):
        Batch({"nope": table})


def test_stop_writes_everything_accepted(tmp_path: Path) -> None:
    with data_path(tmp_path, flush_interval="30s") as (storage, processor):
        for _ in range(5):
            processor.consume_traces(spans_request(100)[0])  # type: ignore[arg-type]
        path = storage.path
    connection = open_read_only(path)
    try:
        row = connection.execute("SELECT count(*) FROM otel_spans").fetchone()
    finally:
        connection.close()
    assert row == (500,)


def test_a_write_starts_once_the_bytes_gathered_reach_the_threshold(tmp_path: Path) -> None:
    # flush_interval 30 s and no full row group: only the byte threshold (the memory budget's) starts the write.
    with data_path(tmp_path, flush_interval="30s") as (storage, processor):
        storage.write_at_bytes(1)
        processor.consume_traces(spans_request(100)[0])  # type: ignore[arg-type]
        processor.consume_traces(spans_request(100)[0])  # type: ignore[arg-type]
        eventually(lambda: count_spans(storage), until=lambda count: count == 200, what="200 spans written")


def test_a_write_starts_once_half_the_queue_is_gathered(tmp_path: Path) -> None:
    # Waiting for more would let the queue bound refuse senders while the writer idles.
    with data_path(tmp_path, flush_interval="30s", queue_max_batches=4) as (storage, processor):
        for _ in range(2):
            processor.consume_traces(spans_request(10)[0])  # type: ignore[arg-type]
        eventually(lambda: count_spans(storage), until=lambda count: count == 20, what="20 spans written")
        assert storage.status()["queue_depth"] == 0


def test_stopping_processor_answers_unavailable(tmp_path: Path) -> None:
    with data_path(tmp_path) as (_, processor):
        processor.stop(1)
        with pytest.raises(ConsumerUnavailableError):
            processor.consume_traces(spans_request(1)[0])  # type: ignore[arg-type]


def test_resent_spans_are_stored_once(tmp_path: Path) -> None:
    with data_path(tmp_path) as (storage, processor):
        request, _ = spans_request(50)
        processor.consume_traces(request)  # type: ignore[arg-type]
        storage.flush()
        processor.consume_traces(request)  # type: ignore[arg-type]  # retried after a lost response
        storage.flush()
        assert count_spans(storage) == 50
        assert storage.status()["duplicate_spans_dropped"] == 50


def test_duplicates_within_one_write_are_stored_once(tmp_path: Path) -> None:
    with data_path(tmp_path, flush_interval="2s") as (storage, processor):
        request, _ = spans_request(20)
        processor.consume_traces(request)  # type: ignore[arg-type]
        processor.consume_traces(request)  # type: ignore[arg-type]  # same write: the writer coalesces
        storage.flush()
        assert count_spans(storage) == 20


def test_same_span_id_in_another_trace_is_a_different_span(tmp_path: Path) -> None:
    with data_path(tmp_path) as (storage, processor):
        trace_a, trace_b, span = os.urandom(16), os.urandom(16), os.urandom(8)
        spans = [http_server_span(t, span, start_ns=NOW, duration_ns=1000) for t in (trace_a, trace_b)]
        processor.consume_traces(trace_request(beyla_resource("shop"), spans))
        storage.flush()
        assert count_spans(storage) == 2


def test_retention_deletes_old_rows_and_checkpoints(tmp_path: Path) -> None:
    clock = [time.time()]
    with data_path(tmp_path, wall_clock=lambda: clock[0], retention="1h", cleanup_interval="1h") as (
        storage,
        processor,
    ):
        old_request, _ = spans_request(10, start_ns=NOW - 3 * 3600 * 10**9)
        new_request, _ = spans_request(7, start_ns=NOW)
        processor.consume_traces(old_request)  # type: ignore[arg-type]
        processor.consume_traces(new_request)  # type: ignore[arg-type]
        storage.flush()
        assert count_spans(storage) == 17
        assert storage.run_cleanup()
        assert count_spans(storage) == 7
        status = storage.status()
        assert status["rows_expired"] == 10
        assert status["wal_size_bytes"] == 0, "cleanup ends with a checkpoint"
        clock[0] += 2 * 3600  # everything is now older than the retention
        assert storage.run_cleanup()
        assert count_spans(storage) == 0
        resources = storage.reader().execute("SELECT count(*) FROM otel_resources").fetchone()
        assert resources == (0,)


def test_status_reports_the_queue_and_writes(tmp_path: Path) -> None:
    with data_path(tmp_path, queue_max_batches=7) as (storage, processor):
        processor.consume_traces(spans_request(4)[0])  # type: ignore[arg-type]
        storage.flush()
        status = storage.status()
    assert status["queue_capacity"] == 7
    assert status["rows_written"]["otel_spans_raw"] == 4
    assert status["batches_written"] == 1
    assert status["last_write"] is not None and status["db_size_bytes"] > 0
    assert status["state"] == "running"


def test_span_window_floor_follows_insertion_time() -> None:
    from coral_ebpf.storage.inserts import DEDUPE_MAX_ROWS, DEDUPE_WINDOW_SECONDS, SpanWindow

    now = [1000.0]
    window = SpanWindow(max_seq=50, clock=lambda: now[0])
    assert window.floor() == 0, "rows stored before start are checked during the first window"
    now[0] += 10
    window.wrote(50, 80)
    now[0] += DEDUPE_WINDOW_SECONDS - 5  # start is out of the window, the write at +10 is in
    assert window.floor() == 50
    now[0] += 10
    assert window.floor() == 80, "no write left in the window: nothing older is checked"
    window.wrote(80, 80 + 3 * DEDUPE_MAX_ROWS)
    assert window.floor() == 80 + 2 * DEDUPE_MAX_ROWS, "the row cap bounds the work per insert"


def test_resent_spans_are_recognised_after_an_agent_restart(tmp_path: Path) -> None:
    request, _ = spans_request(30)
    with data_path(tmp_path) as (_, processor):
        processor.consume_traces(request)  # type: ignore[arg-type]
    with data_path(tmp_path) as (storage, processor):
        processor.consume_traces(request)  # type: ignore[arg-type]
        storage.flush()
        assert count_spans(storage) == 30


def test_memory_limit_is_applied(tmp_path: Path) -> None:
    with data_path(tmp_path, memory_limit="64MiB") as (storage, _):
        assert storage.reader().execute("SELECT current_setting('memory_limit')").fetchone() == ("64.0 MiB",)
        assert storage.status()["memory_limit_bytes"] == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("retention", "0s", "retention"),
        ("cleanup_interval", "0", "cleanup_interval"),
        ("memory_limit", "1MiB", "memory_limit"),
        ("queue_max_batches", "0", "queue_max_batches"),
    ],
)
def test_bad_storage_settings_are_rejected(tmp_path: Path, key: str, value: str, message: str) -> None:
    from coral_ebpf.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        config_for(tmp_path, **{key: value})


def test_a_resource_stays_while_rows_refer_to_it(tmp_path: Path) -> None:
    clock = [time.time()]
    with data_path(tmp_path, wall_clock=lambda: clock[0], retention="1h", cleanup_interval="1h") as (
        storage,
        processor,
    ):
        # The sender's clock runs two hours ahead of the agent's.
        ahead, _ = spans_request(3, start_ns=NOW + 2 * 3600 * 10**9)
        processor.consume_traces(ahead)  # type: ignore[arg-type]
        storage.flush()
        clock[0] += 1.5 * 3600  # the resource was last seen 1.5 h ago; its spans are not expired
        assert storage.run_cleanup()
        rows = storage.reader().execute("SELECT count(*), count(resource_attributes) FROM otel_spans").fetchone()
        assert rows == (3, 3)


def test_every_acknowledged_span_is_stored_when_stop_races_with_senders(tmp_path: Path) -> None:
    acknowledged = [0] * 4
    stop_senders = threading.Event()

    def sender(index: int, processor: Any) -> None:
        while not stop_senders.is_set():
            request, _ = spans_request(20)
            try:
                processor.consume_traces(request)
            except (QueueFullError, ConsumerUnavailableError):
                continue
            acknowledged[index] += 20

    with data_path(tmp_path, queue_max_batches=4, flush_interval="0.05s") as (storage, processor):
        threads = [threading.Thread(target=sender, args=(i, processor)) for i in range(4)]
        for thread in threads:
            thread.start()
        eventually(lambda: sum(acknowledged) >= 400, 30, "the senders to have requests acknowledged")
        storage.stop(30)  # while the senders keep sending
        stop_senders.set()
        for thread in threads:
            thread.join()
        path = storage.path
    connection = open_read_only(path)
    try:
        row = connection.execute("SELECT count(*) FROM otel_spans_raw").fetchone()
    finally:
        connection.close()
    assert sum(acknowledged) > 0
    assert row == (sum(acknowledged),)


def test_a_batch_duckdb_refuses_is_set_aside_and_the_rest_written(tmp_path: Path) -> None:
    import pyarrow as pa

    with data_path(tmp_path, flush_interval="500ms") as (storage, processor):
        processor.consume_traces(spans_request(7)[0])  # type: ignore[arg-type]
        storage.submit(Batch({"otel_spans_raw": pa.table({"no_such_column": [1, 2, 3]})}))
        processor.consume_traces(spans_request(5)[0])  # type: ignore[arg-type]
        storage.flush()
        status = storage.status()
        assert count_spans(storage) == 12, "the good batches of the same write are kept"
        assert status["rows_rejected"] == 3
        assert status["rows_lost"] == 0
        assert status["state"] == "running", "refused content is not a storage failure"
        assert status["applied_seq"] == 3, "the spool position moves past the refused batch"
        assert status["spool"]["written_seq"] == 3


def test_a_full_spool_refuses_and_everything_accepted_is_written(
    tmp_path: Path, stalled_writer: threading.Event
) -> None:
    request, _ = spans_request(2000)
    with data_path(tmp_path, spool_max_bytes="16MiB", queue_max_batches=1000) as (storage, processor):
        accepted = 0
        with pytest.raises(QueueFullError, match="spool full"):
            for _ in range(200):
                processor.consume_traces(request)  # type: ignore[arg-type]
                accepted += 1
        assert 10 < accepted < 200
        assert storage.status()["spool"]["bytes"] <= 16 * 1024 * 1024
        stalled_writer.set()
        storage.flush()
        assert storage.status()["rows_written"]["otel_spans_raw"] == 2000, "one copy: the rest are duplicates"
        assert storage.status()["duplicate_spans_dropped"] == 2000 * (accepted - 1)
        processor.consume_traces(spans_request(10)[0])  # type: ignore[arg-type]  # room again
        storage.flush()
        assert count_spans(storage) == 2010


def test_records_in_the_spool_past_the_applied_position_are_replayed_once(tmp_path: Path) -> None:
    from coral_ebpf.storage.batch import encode_batch
    from coral_ebpf.storage.spool import Spool

    flattener = SpanFlattener("test-agent")
    with data_path(tmp_path) as (storage, processor):
        processor.consume_traces(spans_request(4)[0])  # type: ignore[arg-type]
        storage.flush()
        applied = storage.status()["applied_seq"]
    assert applied == 1
    # What a crash leaves behind: records acknowledged (in the spool, synced) but never applied.
    spool = Spool(tmp_path / "spool", 64 * 1024 * 1024)
    assert spool.recover(applied) == []
    for count in (3, 5):
        table = flattener.flatten(spans_request(count)[0]).table  # type: ignore[arg-type]
        spool.wait_durable(spool.append(encode_batch(Batch({"otel_spans_raw": table})), lambda _seq: None))
    spool.close()
    with data_path(tmp_path) as (storage, _):
        eventually(lambda: storage.status()["replay_pending"] == 0 and storage.status()["queue_depth"] == 0)
        assert storage.status()["spool"]["records_recovered"] == 2
        assert storage.status()["applied_seq"] == 3
        assert count_spans(storage) == 12
    with data_path(tmp_path) as (storage, _):  # applied: nothing is replayed again
        assert storage.status()["spool"]["records_recovered"] == 0
        assert count_spans(storage) == 12


def test_a_version_1_database_gains_the_exponential_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    from coral_ebpf.storage.database import open_for_writing
    from coral_ebpf.storage.schema import (
        DURATION_TABLES,
        EXPONENTIAL_COLUMNS,
        OTHER_EXPONENTIAL_COLUMNS,
        OTHER_HISTOGRAMS,
        SCHEMA_VERSION,
    )

    added = [(table, EXPONENTIAL_COLUMNS) for table in DURATION_TABLES] + [
        (OTHER_HISTOGRAMS.name, OTHER_EXPONENTIAL_COLUMNS)
    ]

    path = tmp_path / "v1.duckdb"
    # A version-1 file: today's tables without the columns version 2 added, and one explicit row.
    connection = open_for_writing(path)
    for table, columns in added:
        for column in columns:
            connection.execute(f"ALTER TABLE {table} DROP COLUMN {column.name}")
    connection.execute("UPDATE db_metadata SET value = '1' WHERE key = 'schema_version'")
    connection.execute(
        "INSERT INTO beyla_http_metrics (timestamp, start_time, agent_id, resource_id, service_name, metric_name, "
        "side, unit, count, bounds_s, bucket_counts, source_temporality) VALUES "
        "(now(), now(), 'a', 1, 'svc', 'http.server.request.duration', 'server', 's', 2, [0.1], [1, 1], 'delta')"
    )
    connection.close()

    # Read-only (no agent has migrated it yet): queries treat every row as explicit-bucket.
    from coral_ebpf.query.dispatch import run_query

    reader = open_read_only(path)
    try:
        (row,) = run_query(reader, "http", {"since": "1h"})["rows"]
        assert row["requests"] == 2 and row["p50_ms"] == pytest.approx(100.0)
    finally:
        reader.close()

    connection = open_for_writing(path)
    try:
        version = connection.execute("SELECT value FROM db_metadata WHERE key = 'schema_version'").fetchone()
        assert version == (SCHEMA_VERSION,)
        rows = connection.execute("SELECT count, bucket_counts, exp_scale FROM beyla_http_metrics").fetchall()
        assert rows == [(2, [1, 1], None)]
        for table, columns in added:
            names = {row[0] for row in connection.execute(f"DESCRIBE {table}").fetchall()}
            assert {column.name for column in columns} <= names
    finally:
        connection.close()


def test_a_batch_spooled_before_the_exponential_columns_still_inserts(tmp_path: Path) -> None:
    import pyarrow as pa

    from coral_ebpf.storage.database import open_for_writing
    from coral_ebpf.storage.schema import EXPONENTIAL_COLUMNS, HTTP_METRICS, arrow_array, arrow_schema

    old_names = [name for name in HTTP_METRICS.column_names if name not in {c.name for c in EXPONENTIAL_COLUMNS}]
    schema = arrow_schema(HTTP_METRICS.name)
    row: dict[str, Any] = dict.fromkeys(old_names)
    row.update(
        timestamp=time.time_ns(),
        start_time=time.time_ns(),
        agent_id="a",
        resource_id=1,
        service_name="svc",
        metric_name="http.server.request.duration",
        side="server",
        unit="s",
        count=1,
        bounds_s=[0.1],
        bucket_counts=[1, 0],
        source_temporality="delta",
    )
    table = pa.Table.from_arrays(
        [arrow_array([row[name]], schema.field(name).type) for name in old_names], names=old_names
    )
    connection = open_for_writing(tmp_path / "db.duckdb")
    try:
        assert inserts.insert_table(connection, HTTP_METRICS.name, table) == 1
        assert connection.execute(f"SELECT count, exp_scale FROM {HTTP_METRICS.name}").fetchall() == [(1, None)]
    finally:
        connection.close()
