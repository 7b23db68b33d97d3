"""A bounded FIFO of OTLP request bodies on disk, one file per request, that survives restarts.

Files are `<seq>.<signal>` (seq zero-padded, so names sort in arrival order), mode 0600 in a
0700 directory, written to a temporary name and renamed, so a crash leaves either the whole
request or nothing. At start the directory is read back and the oldest request goes first.

Durability (`fsync=True`, the default): `put` returns once the request is on stable storage, so
a power cut loses nothing that was acknowledged. Group commit keeps that cheap: writers write
their temporary file under the lock and wait; one of them (the leader) fdatasyncs every file
written since the last sync, renames them and fsyncs the directory once, for everybody. The
receiving path stages a request (writes it) before storing it and commits it (waits for the
sync, then queues it) after, so the sync overlaps the storage's own; a request the storage
refused is discarded. A crash between a sync and the commit can leave a request its sender was
never acknowledged for: it is exported, and maybe again when the sender retries (at least once). With
`fsync=False` nothing is synced: an agent crash still loses nothing, a power cut may lose what
the page cache held. Removing a sent request is not synced: after a power cut it may be sent
again (at least once, never lost).

When a new request would pass `max_bytes`, the policy decides: `drop_oldest` deletes the oldest
requests until it fits (counted in `dropped_*`), `refuse` makes `put` raise `QueueFull` (the
caller turns it into 429 / RESOURCE_EXHAUSTED, so senders slow down).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

SIGNALS = ("traces", "metrics", "logs")


class QueueFull(Exception):
    """The queue is at its bound and the policy is `refuse`."""


@dataclass(frozen=True)
class Entry:
    seq: int
    signal: str
    size: int
    path: Path


@dataclass(frozen=True)
class Staged:
    """A request written into the queue directory but not yet in the queue (see `DiskQueue.stage`)."""

    entry: Entry


@dataclass(frozen=True)
class _Written:
    """A request in its temporary file, not yet synced (the descriptor stays open for the sync)."""

    entry: Entry
    fd: int
    temporary: Path


class DiskQueue:
    def __init__(self, directory: Path, max_bytes: int, policy: str = "drop_oldest", *, fsync: bool = True) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.policy = policy
        self.fsync = fsync
        self._lock = threading.Lock()
        self._nonempty = threading.Condition(self._lock)
        self._synced = threading.Condition(self._lock)
        self._unsynced: list[_Written] = []  # written, waiting for the next group sync
        self._syncing = False
        self._durable_seq = 0
        self._failed: dict[int, OSError] = {}  # seq -> why its sync failed (its writer raises it)
        self.syncs = 0
        self._entries: deque[Entry] = deque()
        self._bytes = 0
        self._next_seq = 1
        self.dropped_requests = 0
        self.dropped_bytes = 0
        self.refused_requests = 0
        self.recovered_requests = 0

    def open(self) -> None:
        """Create the directory (0700) and take over what a previous run left in it."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        found = []
        for path in self.directory.iterdir():
            seq_text, _, signal = path.name.partition(".")
            if path.name.startswith(".tmp") or not seq_text.isdigit() or signal not in SIGNALS:
                path.unlink(missing_ok=True)  # a write cut short, or not ours
                continue
            found.append(Entry(int(seq_text), signal, path.stat().st_size, path))
        found.sort(key=lambda entry: entry.seq)
        with self._lock:
            self._entries = deque(found)
            self._bytes = sum(entry.size for entry in found)
            self._next_seq = (found[-1].seq + 1) if found else 1
            self.recovered_requests = len(found)

    def would_refuse(self, size: int) -> bool:
        """True when the policy is `refuse` and `size` more bytes would not fit now."""
        return self.policy == "refuse" and self._bytes + size > self.max_bytes

    def put(self, signal: str, body: bytes) -> None:
        """Queue `body` now (`stage` then `commit`)."""
        staged = self.stage(signal, body)
        if staged is not None:
            self.commit(staged)

    def stage(self, signal: str, body: bytes) -> Staged | None:
        """Write `body` into the queue directory; it joins the queue at `commit`, or goes at `discard`.

        The file's sync can start at once (another writer's commit syncs every staged file), so a
        caller that stages before its own slow work (storing the request) overlaps the two.
        None: too large to ever fit, dropped and counted (`drop_oldest`).
        """
        with self._lock:
            if len(body) > self.max_bytes:  # can never fit: dropped (drop_oldest) or refused, and counted
                if self.policy == "refuse":
                    self.refused_requests += 1
                    raise QueueFull(f"a {len(body)}-byte request is larger than the export queue ({self.max_bytes})")
                self.dropped_requests += 1
                self.dropped_bytes += len(body)
                return None
            if self._bytes + len(body) > self.max_bytes:
                if self.policy == "refuse":
                    self.refused_requests += 1
                    raise QueueFull(f"export queue full ({self._bytes} of {self.max_bytes} bytes)")
                while self._entries and self._bytes + len(body) > self.max_bytes:
                    oldest = self._entries.popleft()
                    self._bytes -= oldest.size
                    self.dropped_requests += 1
                    self.dropped_bytes += oldest.size
                    oldest.path.unlink(missing_ok=True)
            seq = self._next_seq
            self._next_seq += 1
            entry = Entry(seq, signal, len(body), self.directory / f"{seq:020d}.{signal}")
            temporary = self.directory / f".tmp{seq}"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, body)
            except OSError:
                os.close(fd)
                temporary.unlink(missing_ok=True)
                raise
            self._bytes += len(body)
            if self.fsync:
                self._unsynced.append(_Written(entry, fd, temporary))
            else:
                os.close(fd)
                os.rename(temporary, entry.path)
            return Staged(entry)

    def commit(self, staged: Staged) -> None:
        """Wait until the staged request is on stable storage (with `fsync`), then queue it.

        Requests join the queue in commit order. Raises the OSError of a failed sync (the request
        is not queued then).
        """
        with self._lock:
            if self.fsync:
                self._wait_synced(staged.entry.seq)
            self._entries.append(staged.entry)
            self._nonempty.notify_all()

    def discard(self, staged: Staged) -> None:
        """Remove a staged request that will not be committed (its sender was refused)."""
        entry = staged.entry
        with self._lock:
            for index, written in enumerate(self._unsynced):
                if written.entry.seq == entry.seq:
                    del self._unsynced[index]
                    os.close(written.fd)
                    written.temporary.unlink(missing_ok=True)
                    self._bytes -= entry.size
                    return
            if self.fsync:
                try:
                    self._wait_synced(entry.seq)  # in a sync under way: let it finish with the file
                except OSError:
                    return  # the failed sync removed it already
            entry.path.unlink(missing_ok=True)
            self._bytes -= entry.size

    def _wait_synced(self, seq: int) -> None:
        """Wait (holding the lock) until a group sync covered `seq`, leading one when none runs."""
        while self._durable_seq < seq:
            if self._syncing:
                self._synced.wait()
                continue
            batch, self._unsynced = self._unsynced, []
            self._syncing = True
            self._lock.release()
            try:
                failure = _sync_batch(self.directory, batch)
            finally:
                self._lock.acquire()
                self._syncing = False
            self.syncs += 1
            if failure is not None:
                for written in batch:
                    self._failed[written.entry.seq] = failure
                    self._bytes -= written.entry.size
            self._durable_seq = max(self._durable_seq, seq, *(written.entry.seq for written in batch))
            self._synced.notify_all()
        error = self._failed.pop(seq, None)
        if error is not None:
            raise error

    def oldest(self, timeout: float) -> Entry | None:
        """The oldest entry (left in the queue), waiting up to `timeout` for one."""
        with self._nonempty:
            if not self._entries:
                self._nonempty.wait(timeout)
            return self._entries[0] if self._entries else None

    def read(self, entry: Entry) -> bytes | None:
        try:
            return entry.path.read_bytes()
        except FileNotFoundError:  # dropped by drop_oldest meanwhile
            return None

    def remove(self, entry: Entry) -> None:
        """Forget `entry` (sent, or given up on) if it is still queued."""
        with self._lock:
            if self._entries and self._entries[0].seq == entry.seq:
                self._entries.popleft()
                self._bytes -= entry.size
                entry.path.unlink(missing_ok=True)

    def wake(self) -> None:
        with self._nonempty:
            self._nonempty.notify_all()

    @property
    def requests(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes


def _write_all(fd: int, body: bytes) -> None:
    view = memoryview(body)
    while view:
        view = view[os.write(fd, view) :]


def _sync_batch(directory: Path, batch: list[_Written]) -> OSError | None:
    """Sync the data of every file in `batch`, rename each to its queue name, sync the directory.

    Data before names: after a power cut a queue name never points at a file whose data was lost.
    On failure every file of the batch is removed (none was acknowledged) and the error returned.
    """
    try:
        for written in batch:
            os.fdatasync(written.fd)
        for written in batch:
            os.rename(written.temporary, written.entry.path)
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
    except OSError as exc:
        for written in batch:
            written.temporary.unlink(missing_ok=True)
            written.entry.path.unlink(missing_ok=True)
        return exc
    finally:
        for written in batch:
            os.close(written.fd)
    return None
