"""The export queue on disk: order, persistence across reopen, bounds and policies, file modes."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from coral_ebpf.export.queue import DiskQueue, QueueFull


def test_fifo_and_persistence(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q", 1000)
    queue.open()
    queue.put("traces", b"a" * 10)
    queue.put("metrics", b"b" * 20)
    assert (queue.requests, queue.bytes) == (2, 30)
    assert stat.S_IMODE((tmp_path / "q").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in (tmp_path / "q").iterdir())
    (tmp_path / "q" / ".tmp99").write_bytes(b"half a write")  # a crash mid-write
    again = DiskQueue(tmp_path / "q", 1000)
    again.open()
    assert again.recovered_requests == 2 and again.bytes == 30
    first = again.oldest(0)
    assert first is not None and first.signal == "traces" and again.read(first) == b"a" * 10
    again.remove(first)
    again.put("logs", b"c")
    second = again.oldest(0)
    assert second is not None and second.signal == "metrics"
    assert not (tmp_path / "q" / ".tmp99").exists()
    assert sorted(p.name.split(".")[1] for p in (tmp_path / "q").iterdir()) == ["logs", "metrics"]


def test_drop_oldest_makes_room_and_counts(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path, 25, "drop_oldest")
    queue.open()
    for body in (b"1" * 10, b"2" * 10, b"3" * 10):
        queue.put("traces", body)
    assert (queue.requests, queue.bytes, queue.dropped_requests, queue.dropped_bytes) == (2, 20, 1, 10)
    oldest = queue.oldest(0)
    assert oldest is not None and queue.read(oldest) == b"2" * 10
    queue.put("traces", b"x" * 30)  # can never fit: dropped and counted, the queue is left alone
    assert (queue.requests, queue.dropped_requests) == (2, 2)


def test_refuse_policy(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path, 25, "refuse")
    queue.open()
    queue.put("traces", b"1" * 20)
    assert queue.would_refuse(10) and not queue.would_refuse(5)
    with pytest.raises(QueueFull, match="export queue full"):
        queue.put("traces", b"2" * 10)
    assert queue.refused_requests == 1 and queue.requests == 1


def test_concurrent_puts_share_group_syncs_and_keep_order(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q", 1 << 20)
    queue.open()
    threads, each = 8, 15
    start = threading.Barrier(threads)

    def writer(index: int) -> None:
        start.wait()
        for round_ in range(each):
            queue.put("traces", f"{index}:{round_}".encode())

    workers = [threading.Thread(target=writer, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert queue.requests == threads * each
    assert 0 < queue.syncs < threads * each  # many requests per fdatasync + directory fsync
    names = sorted(path.name for path in (tmp_path / "q").iterdir())
    assert len(names) == threads * each and not any(name.startswith(".tmp") for name in names)
    rounds: dict[int, list[int]] = {index: [] for index in range(threads)}
    while (entry := queue.oldest(0)) is not None:  # commit order: each writer's requests in its order
        index, round_ = (int(part) for part in (queue.read(entry) or b"").decode().split(":"))
        rounds[index].append(round_)
        queue.remove(entry)
    assert all(seen == list(range(each)) for seen in rounds.values())


def test_without_fsync_nothing_is_synced(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q", 1000, fsync=False)
    queue.open()
    queue.put("traces", b"a")
    assert queue.syncs == 0 and queue.requests == 1 and (tmp_path / "q" / f"{1:020d}.traces").read_bytes() == b"a"


def test_a_staged_request_joins_at_commit_and_leaves_at_discard(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q", 1000)
    queue.open()
    refused = queue.stage("traces", b"r" * 10)  # its sender will be refused by the storage
    kept = queue.stage("traces", b"k" * 20)
    assert refused is not None and kept is not None
    assert queue.requests == 0 and queue.bytes == 30  # staged: counted against the bound, not sendable
    queue.commit(kept)  # syncs both staged files in one group
    assert queue.syncs == 1 and queue.requests == 1
    queue.discard(refused)  # already synced and renamed: its file goes
    assert (queue.requests, queue.bytes) == (1, 20)
    early = queue.stage("metrics", b"e" * 5)
    assert early is not None
    queue.discard(early)  # never synced: its temporary file goes
    assert queue.syncs == 1 and queue.bytes == 20
    assert [path.name for path in (tmp_path / "q").iterdir()] == [f"{kept.entry.seq:020d}.traces"]
