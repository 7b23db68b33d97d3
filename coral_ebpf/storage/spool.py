"""`Spool`: the write-ahead log that makes an acknowledgement mean "kept".

A request is answered only after its accepted content is appended here and fsynced; the
storage writer applies records to DuckDB and stores the highest sequence number it applied in
the same transaction as the rows, so a restart replays exactly the records not yet applied.

Layout: append-only segment files `<dir>/<first seq, 20 digits>.seg`, mode 0600 in a 0700
directory. Each record is a 20-byte header (magic, payload length, sequence number, CRC-32 of
length, sequence number and payload) followed by the payload. A record whose checksum does not
match (a torn write at a crash or power loss) was never acknowledged: recovery stops reading its
segment there and goes on with the next one. Records are only ever appended to a segment
opened by this process; after a write error the segment is truncated back and closed, so a
half-written record never has good records after it.

Group commit: appenders write under one lock, then wait until a sync covers their record. One
of the waiting threads runs fdatasync for everybody written so far while the others wait, so
many concurrent requests share one fsync.

The spool is bounded (`storage.spool_max_bytes`); segments whose records are all applied are
deleted. Write failures (ENOSPC, EIO, EROFS) raise `SpoolWriteError` and are remembered (with
the time) until a later write and sync succeed.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_MAGIC = b"CSP1"
_HEADER = struct.Struct("<4sIQI")  # magic, payload length, sequence number, crc32
_SUFFIX = ".seg"
# A length above this in a header is corruption, not a record (bodies are capped well below).
MAX_RECORD_BYTES = 1 << 30


class SpoolFullError(Exception):
    """The spool holds `max_bytes` of records not yet applied; the client should retry later."""


class SpoolWriteError(Exception):
    """The spool could not write or sync (disk full, I/O error, read-only file system)."""


@dataclass(frozen=True)
class SpoolProblem:
    message: str
    since: float


def _checksum(length: int, seq: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<IQ", length, seq)))


def describe_os_error(exc: OSError) -> str:
    """`No space left on device (ENOSPC)`: the errno's text and its name."""
    name = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


@dataclass(frozen=True)
class RecordRef:
    """Where a record not yet applied lies in the spool."""

    path: Path
    offset: int
    length: int
    seq: int


@dataclass
class _Segment:
    path: Path
    first_seq: int
    last_seq: int
    size: int


class Spool:
    """Append-only, checksummed, group-committed segment files in one directory."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        *,
        segment_bytes: int = 16 * 1024 * 1024,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._clock = wall_clock
        self._lock = threading.Lock()
        self._synced = threading.Condition(self._lock)
        self._segments: list[_Segment] = []  # closed segments, oldest first
        self._current: _Segment | None = None
        self._fd: int | None = None
        self._next_seq = 1
        self._written_seq = 0
        self._durable_seq = 0
        self._syncing = False
        self._bytes = 0
        self._problem: SpoolProblem | None = None
        # Records up to here were covered by a failed sync: they are never acknowledged.
        self._lost_sync_through = 0
        self.records_recovered = 0
        self.corrupt_tails = 0
        self.syncs = 0

    # -- recovery --------------------------------------------------------------------------

    def recover(self, applied_seq: int) -> list[RecordRef]:
        """Open the directory; every intact record with seq > applied_seq, in order (read them with `read`).

        Call once, before the first append. Payloads are not kept in memory: the spool may hold
        far more than the memory budget.
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        last_seq = applied_seq
        pending = []
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            try:
                first = int(path.stem)
            except ValueError:
                log.warning("ignoring a file in the spool that is not a segment", extra={"fields": {"path": str(path)}})
                continue
            segment = _Segment(path, first, first - 1, path.stat().st_size)
            for seq, offset, length in self._scan_segment(segment):
                segment.last_seq = seq
                last_seq = max(last_seq, seq)
                if seq > applied_seq:
                    pending.append(RecordRef(path, offset, length, seq))
            self._segments.append(segment)
            self._bytes += segment.size
        self.records_recovered = len(pending)
        self._next_seq = last_seq + 1
        self._written_seq = self._durable_seq = last_seq
        return pending

    def read(self, ref: RecordRef) -> bytes:
        """The payload of a record found by `recover` (checked against its checksum again)."""
        with open(ref.path, "rb", opener=_private_opener(os.O_RDONLY)) as handle:
            handle.seek(ref.offset)
            data = handle.read(_HEADER.size + ref.length)
        _magic, length, seq, crc = _HEADER.unpack_from(data, 0)
        payload = data[_HEADER.size :]
        if seq != ref.seq or length != ref.length or _checksum(length, seq, payload) != crc:
            raise SpoolWriteError(f"spool record {ref.seq} in {ref.path} changed since it was checked")
        return payload

    def _scan_segment(self, segment: _Segment) -> Iterator[tuple[int, int, int]]:
        """(seq, offset, payload length) of each intact record, up to the first damaged one."""
        with open(segment.path, "rb", opener=_private_opener(os.O_RDONLY)) as handle:
            data = handle.read()
        offset, previous = 0, segment.first_seq - 1
        while offset < len(data):
            problem = ""
            length = seq = 0
            if len(data) - offset < _HEADER.size:
                problem = "truncated header"
            else:
                magic, length, seq, crc = _HEADER.unpack_from(data, offset)
                body = memoryview(data)[offset + _HEADER.size : offset + _HEADER.size + length]
                if magic != _MAGIC or length > MAX_RECORD_BYTES:
                    problem = "bad header"
                elif len(body) < length:
                    problem = "truncated record"
                elif _checksum(length, seq, body) != crc:
                    problem = "checksum mismatch"
                elif seq <= previous:
                    problem = "sequence number out of order"
            if problem:
                # Never acknowledged (the sync that would have covered it did not finish).
                self.corrupt_tails += 1
                log.warning(
                    "spool segment ends in a damaged record; the rest of the segment is dropped",
                    extra={
                        "fields": {
                            "path": str(segment.path),
                            "offset": offset,
                            "reason": problem,
                            "bytes_dropped": len(data) - offset,
                        }
                    },
                )
                return
            yield seq, offset, length
            previous = seq
            offset += _HEADER.size + length

    # -- appending -------------------------------------------------------------------------

    def append(self, payload: bytes, on_written: Callable[[int], None]) -> int:
        """Write one record; return its sequence number. Not durable until `wait_durable`.

        `on_written(seq)` runs under the spool's lock right after the write, so whatever it
        does (queueing for the writer) happens in sequence order.
        """
        size = _HEADER.size + len(payload)
        with self._lock:
            if self._bytes + size > self.max_bytes and self._bytes > 0:
                raise SpoolFullError(
                    f"spool full ({self._bytes} of {self.max_bytes} bytes wait to be written to the database)"
                )
            seq = self._next_seq
            header = _HEADER.pack(_MAGIC, len(payload), seq, _checksum(len(payload), seq, payload))
            try:
                if self._current is None or self._current.size >= self.segment_bytes:
                    self._rotate(seq)
                assert self._fd is not None and self._current is not None
                _write_all(self._fd, header, payload)
            except OSError as exc:
                self._abandon_segment()
                self._problem = SpoolProblem(f"spool write failed: {describe_os_error(exc)}", self._clock())
                raise SpoolWriteError(self._problem.message) from exc
            self._current.size += size
            self._current.last_seq = seq
            self._bytes += size
            self._next_seq = seq + 1
            self._written_seq = seq
            on_written(seq)
            return seq

    def wait_durable(self, seq: int) -> None:
        """Return once record `seq` is fsynced; one thread syncs for all that wait (group commit)."""
        with self._synced:
            while self._durable_seq < seq:
                if self._syncing:
                    self._synced.wait()
                    continue
                target, fd = self._written_seq, self._fd
                if seq <= self._lost_sync_through:
                    raise SpoolWriteError(self._problem.message if self._problem else "spool sync failed")
                self._syncing = True
                self._synced.release()
                error: OSError | None = None
                try:
                    if fd is not None:
                        os.fdatasync(fd)
                except OSError as exc:
                    error = exc
                finally:
                    self._synced.acquire()
                    self._syncing = False
                    self._synced.notify_all()
                self.syncs += 1
                if error is not None:
                    self._problem = SpoolProblem(f"spool sync failed: {describe_os_error(error)}", self._clock())
                    self._close_after_failed_sync(target)
                    raise SpoolWriteError(self._problem.message) from error
                self._durable_seq = max(self._durable_seq, target)
                self._problem = None

    def _close_after_failed_sync(self, target: int) -> None:
        """After fdatasync failed (under the lock): nothing through `target` may ever count as durable.

        Linux reports a writeback error to fdatasync once: a second call on the same file can succeed
        although the pages it covered never reached the disk. So the segment is closed here, its
        records stay unacknowledged (a restart may replay the intact ones), and the next append
        starts a new segment.
        """
        self._lost_sync_through = max(self._lost_sync_through, target)
        current, fd = self._current, self._fd
        self._current, self._fd = None, None
        if fd is not None:
            os.close(fd)
        if current is not None:
            self._segments.append(current)

    def _rotate(self, first_seq: int) -> None:
        """Close the current segment (synced) and start a new one; called under the lock."""
        while self._syncing:  # its fd must stay open while another thread syncs it
            self._synced.wait()
        if self._current is not None and self._fd is not None:
            os.fdatasync(self._fd)
            self._durable_seq = max(self._durable_seq, self._written_seq)
            os.close(self._fd)
            self._segments.append(self._current)
            self._current, self._fd = None, None
        path = self.directory / f"{first_seq:020d}{_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            _fsync_directory(self.directory)  # the new name must survive a power loss too
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        self._fd = fd
        self._current = _Segment(path, first_seq, first_seq - 1, 0)

    def _abandon_segment(self) -> None:
        """After a failed write: cut the partial record off and close the segment (under the lock)."""
        while self._syncing:
            self._synced.wait()
        current, fd = self._current, self._fd
        self._current, self._fd = None, None
        if current is None or fd is None:
            return
        try:
            os.ftruncate(fd, current.size)
        except OSError as exc:  # recovery's checksum finds the torn record and drops it
            log.warning("could not cut a failed spool write off", extra={"fields": {"error": str(exc)}})
        try:
            os.fdatasync(fd)
            self._durable_seq = max(self._durable_seq, self._written_seq)
        except OSError:
            self._lost_sync_through = self._written_seq
            log.debug("sync after a failed spool write failed too", exc_info=True)
        os.close(fd)
        if current.size == 0:
            _unlink_quietly(current.path)
        else:
            self._segments.append(current)

    # -- consumption -----------------------------------------------------------------------

    def release_through(self, applied_seq: int) -> None:
        """Delete closed segments whose records are all applied."""
        with self._lock:
            while self._segments and self._segments[0].last_seq <= applied_seq:
                segment = self._segments.pop(0)
                _unlink_quietly(segment.path)
                self._bytes -= segment.size
            if (
                self._current is not None
                and self._current.last_seq <= applied_seq
                and self._current.size >= self.segment_bytes // 4
                and not self._syncing
                and self._durable_seq >= self._current.last_seq
            ):
                # Applied and large: start afresh so the space comes back without waiting for more data.
                current, fd = self._current, self._fd
                self._current, self._fd = None, None
                assert fd is not None
                os.close(fd)
                _unlink_quietly(current.path)
                self._bytes -= current.size

    def close(self) -> None:
        with self._lock:
            while self._syncing:
                self._synced.wait()
            if self._fd is not None:
                try:
                    os.fdatasync(self._fd)
                except OSError as exc:
                    log.warning("final spool sync failed", extra={"fields": {"error": str(exc)}})
                os.close(self._fd)
                self._fd = None
            if self._current is not None:
                self._segments.append(self._current)
                self._current = None

    # -- status ----------------------------------------------------------------------------

    @property
    def problem(self) -> SpoolProblem | None:
        return self._problem

    def status(self) -> dict[str, Any]:
        problem = self._problem
        return {
            "directory": str(self.directory),
            "bytes": self._bytes,
            "max_bytes": self.max_bytes,
            "segments": len(self._segments) + (self._current is not None),
            "written_seq": self._written_seq,
            "durable_seq": self._durable_seq,
            "syncs": self.syncs,
            "records_recovered": self.records_recovered,
            "corrupt_tails_dropped": self.corrupt_tails,
            "error": problem.message if problem else "",
            "error_since": problem.since if problem else None,
        }


def _write_all(fd: int, header: bytes, payload: bytes) -> None:
    """Write header and payload (one writev, more calls only after a short write)."""
    written = os.writev(fd, [header, payload])
    total = len(header) + len(payload)
    if written < total:
        rest = memoryview(header + payload)[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]


def _private_opener(flags: int) -> Callable[[str, int], int]:
    def opener(path: str, _flags: int) -> int:
        return os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW)

    return opener


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning(
            "could not delete an applied spool segment", extra={"fields": {"path": str(path), "error": str(exc)}}
        )
