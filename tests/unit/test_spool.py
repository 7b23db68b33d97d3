"""The write-ahead spool on real files: records, checksums, torn tails, bounds, group commit, write errors."""

from __future__ import annotations

import os
import resource
import signal
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coral_ebpf.storage.spool import Spool, SpoolFullError, SpoolWriteError

MiB = 1024 * 1024


def opened(directory: Path, applied: int = 0, **kwargs: Any) -> tuple[Spool, list[tuple[int, bytes]]]:
    spool = Spool(directory, kwargs.pop("max_bytes", 64 * MiB), **kwargs)
    return spool, [(ref.seq, spool.read(ref)) for ref in spool.recover(applied)]


def append(spool: Spool, payload: bytes) -> int:
    seq = spool.append(payload, lambda _seq: None)
    spool.wait_durable(seq)
    return seq


def test_records_come_back_in_order_after_reopen(tmp_path: Path) -> None:
    spool, replay = opened(tmp_path / "spool")
    assert replay == []
    payloads = [f"record {i}".encode() * (i + 1) for i in range(20)]
    seqs = [append(spool, payload) for payload in payloads]
    assert seqs == list(range(1, 21))
    spool.close()
    again, replay = opened(tmp_path / "spool", applied=5)
    assert replay == list(zip(seqs[5:], payloads[5:], strict=True))
    assert append(again, b"next") == 21, "numbering goes on after the last record on disk"


def test_files_are_private(tmp_path: Path) -> None:
    spool, _ = opened(tmp_path / "spool")
    append(spool, b"x")
    spool.close()
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    for segment in (tmp_path / "spool").iterdir():
        assert stat.S_IMODE(segment.stat().st_mode) == 0o600


def _only_segment(directory: Path) -> Path:
    (segment,) = directory.iterdir()
    return segment


@pytest.mark.parametrize("damage", ["torn", "flipped", "garbage"])
def test_a_damaged_tail_is_dropped_and_later_records_survive(tmp_path: Path, damage: str) -> None:
    directory = tmp_path / "spool"
    spool, _ = opened(directory)
    for i in range(3):
        append(spool, bytes([i]) * 1000)
    spool.close()
    segment = _only_segment(directory)
    data = bytearray(segment.read_bytes())
    if damage == "torn":  # a crash in the middle of the last write
        data = data[:-400]
    elif damage == "flipped":
        data[-10] ^= 0xFF
    else:
        data += b"\x00garbage after the last record"
    segment.write_bytes(bytes(data))
    spool, replay = opened(directory)
    expected = 3 if damage == "garbage" else 2
    assert [seq for seq, _ in replay] == list(range(1, expected + 1))
    assert spool.status()["corrupt_tails_dropped"] == 1
    assert append(spool, b"after") == expected + 1, "the damaged record's number is reused: it was never acknowledged"
    spool.close()
    _, replay = opened(directory)
    assert [seq for seq, _ in replay] == [*range(1, expected + 1), expected + 1]


def test_full_spool_refuses_until_applied_segments_are_released(tmp_path: Path) -> None:
    spool, _ = opened(tmp_path / "spool", max_bytes=10_000, segment_bytes=2_000)
    seqs = []
    with pytest.raises(SpoolFullError, match="spool full"):
        for _ in range(100):
            seqs.append(append(spool, b"x" * 900))
    assert len(seqs) == 10
    spool.release_through(seqs[5])
    assert len(list((tmp_path / "spool").iterdir())) < 5
    append(spool, b"x" * 900)
    spool.release_through(seqs[-1] + 1)
    assert spool.status()["bytes"] <= 2_000


def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    spool, _ = opened(tmp_path / "spool")
    barrier = threading.Barrier(8)

    def sender() -> None:
        barrier.wait()
        for _ in range(50):
            append(spool, b"y" * 2000)

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status = spool.status()
    assert status["durable_seq"] == 400
    assert status["syncs"] < 400, "group commit: some requests shared a sync"
    spool.close()
    _, replay = opened(tmp_path / "spool")
    assert len(replay) == 400


@pytest.fixture
def file_size_limit() -> Iterator[None]:
    """Writes beyond 64 KiB fail with EFBIG (like ENOSPC: a write error of the file system)."""
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, previous[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)
        signal.signal(signal.SIGXFSZ, previous_handler)


def test_a_failed_write_leaves_no_torn_record_and_writing_resumes(tmp_path: Path, file_size_limit: None) -> None:
    directory = tmp_path / "spool"
    spool, _ = opened(directory, segment_bytes=MiB)
    written = [append(spool, b"z" * 10_000) for _ in range(6)]
    with pytest.raises(SpoolWriteError, match=r"File too large \(EFBIG\)"):
        append(spool, b"z" * 10_000)
    assert "EFBIG" in spool.status()["error"]
    assert spool.status()["error_since"] is not None
    # The next write goes to a new segment, which has room: the spool recovers by itself.
    assert append(spool, b"after") == written[-1] + 1
    assert spool.status()["error"] == ""
    spool.close()
    segments = sorted(directory.iterdir())
    assert len(segments) == 2
    assert all(os.path.getsize(s) <= 64 * 1024 for s in segments)
    _, replay = opened(directory)
    assert [seq for seq, _ in replay] == [*written, written[-1] + 1]
    assert spool.status()["corrupt_tails_dropped"] == 0
