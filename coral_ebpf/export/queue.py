"""A bounded FIFO of OTLP request bodies on disk, one file per request, that survives restarts.

Files are `<seq>.<signal>` (seq zero-padded, so names sort in arrival order), mode 0600 in a
0700 directory, written to a temporary name and renamed, so a crash leaves either the whole
request or nothing. No fsync per request: an agent crash loses nothing, a power cut may lose
what the page cache held. At start the directory is read back and the oldest request goes first.

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


class DiskQueue:
    def __init__(self, directory: Path, max_bytes: int, policy: str = "drop_oldest") -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.policy = policy
        self._lock = threading.Lock()
        self._nonempty = threading.Condition(self._lock)
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
        with self._lock:
            if len(body) > self.max_bytes:  # can never fit: dropped (drop_oldest) or refused, and counted
                if self.policy == "refuse":
                    self.refused_requests += 1
                    raise QueueFull(f"a {len(body)}-byte request is larger than the export queue ({self.max_bytes})")
                self.dropped_requests += 1
                self.dropped_bytes += len(body)
                return
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
            path = self.directory / f"{seq:020d}.{signal}"
            temporary = self.directory / f".tmp{seq}"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
            os.rename(temporary, path)
            self._entries.append(Entry(seq, signal, len(body), path))
            self._bytes += len(body)
            self._nonempty.notify_all()

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
