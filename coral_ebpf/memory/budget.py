"""`MemoryBudget`: bytes in flight accounted against `limits.memory`, and the process's RSS.

The budget covers the agent's private (anonymous) memory. Shared library text (LLVM for BCC,
DuckDB, Arrow: ~200 MiB file-backed pages, shared with the page cache and reclaimable) is
reported but not charged. It is split three ways:

- DuckDB: `storage.memory_limit` (DuckDB enforces it; bigger queries spill to disk);
- the agent's own footprint, measured when the receiver starts (`calibrate`);
- data in flight: half of whatever is left (at least 16 MiB): the bytes counted are about half of
  what they really take (`_MEMORY_PER_ACCOUNTED_BYTE`). Request bodies being decoded and
  flattened are reserved here for the length of the call (an estimate from the body size),
  and batches accepted and not yet written are counted from storage until written.

A request that would take data in flight past its share is refused with 429 / RESOURCE_EXHAUSTED
(the client retries later), unless nothing else is in flight (one request larger than the share
must not be refused forever). The anonymous RSS is checked too: over the whole budget, new
requests are refused while something is in flight.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from coral_ebpf.memory.settings import MIN_IN_FLIGHT
from coral_ebpf.resident import trim_heap

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE")
_RSS_SAMPLE_SECONDS = 0.05
# Above this part of the budget, new requests wait for what is in flight to drain: requests
# already admitted still grow while they are flattened and written.
_RSS_HIGH_WATER = 0.75
# Above this part, freed heap is handed back to the kernel (at most once a second).
_TRIM_AT = 0.6
_TRIM_SECONDS = 1.0
# Before refusing for RSS, trim and measure again, at most this often (a trim takes a few ms).
_TRIM_BEFORE_REFUSAL_SECONDS = 0.2
# glibc mallopt parameters. Fixed thresholds switch off glibc's sliding mmap threshold, which after the
# first large free serves every allocation up to 32 MiB from the heap, where a request's body and Arrow
# buffers freed out of order stay resident until a trim. Blocks of 64 KiB and more (bodies, Arrow
# columns) are mapped and unmapped on their own, and free heap top above 1 MiB goes back at once.
# bench/ingest.py with the default budget: 132-216 refusals instead of 292-304, 39-43k spans/s instead
# of 34-39k.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD_BYTES = 64 * 1024
_TRIM_THRESHOLD_BYTES = 1024 * 1024
# Private memory a flood takes per byte counted in flight: the count misses gRPC's own copy of each
# body (read before the handler runs), transient protobuf/Arrow copies and allocator fragmentation.
# With the whole room after DuckDB and the idle footprint as the share, one flood took the private
# RSS to 290 MiB against a 256 MiB budget (bench/flood.py); with half of it, 259-266 MiB.
_MEMORY_PER_ACCOUNTED_BYTE = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def tame_allocators() -> None:
    """Fewer malloc arenas and Arrow on the system allocator, so freed memory goes back to the kernel.

    With one glibc arena per thread (gRPC and HTTP workers, the writer) and Arrow's mimalloc
    pool, a flood left ~340 MiB private RSS behind where the same load with these settings
    peaked ~60 MiB lower (bench/flood.py).
    """
    import pyarrow as pa

    if hasattr(_libc, "mallopt"):
        _libc.mallopt(_M_ARENA_MAX, 2)
        _libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
        _libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    try:
        pa.set_memory_pool(pa.system_memory_pool())
    except pa.ArrowException as exc:  # an Arrow build without it keeps its own pool
        log.debug("Arrow keeps its default memory pool", extra={"fields": {"error": str(exc)}})


class MemoryBudgetExceededError(Exception):
    """Taking this request would pass the memory budget; retry later."""


def process_memory() -> dict[str, int]:
    """rss, anonymous rss, file-backed rss and peak rss (VmHWM) of this process, in bytes."""
    values: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return {
        "rss": values.get("VmRSS", 0),
        "anon": values.get("RssAnon", 0),
        "file": values.get("RssFile", 0),
        "peak": values.get("VmHWM", 0),
    }


def anonymous_rss() -> int:
    """Cheaper than `process_memory` for the hot path: resident minus shared pages, from statm."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        fields = statm.read().split()
    return (int(fields[1]) - int(fields[2])) * _PAGE


class Held:
    """Bytes held in a MemoryBudget by one request (a body being read, a request being decoded)."""

    def __init__(self, budget: MemoryBudget) -> None:
        self._budget = budget
        self.bytes = 0

    def grow(self, nbytes: int) -> None:
        """Hold `nbytes` more, or raise MemoryBudgetExceededError (what is held stays held)."""
        self._budget._grow(self, nbytes)

    def release(self) -> None:
        self._budget._release(self)


class MemoryBudget:
    def __init__(
        self,
        limit: int,
        duckdb_share: int,
        queued_bytes: Callable[[], int],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.duckdb_share = duckdb_share
        self._queued_bytes = queued_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._decoding = 0
        self.in_flight_limit = max(limit - duckdb_share, MIN_IN_FLIGHT)
        self.idle: dict[str, int] = {}
        self._anon = 0
        self._anon_at = float("-inf")
        self.refusals = 0
        self.last_refusal = ""
        self._trimmed_at = float("-inf")

    def calibrate(self) -> None:
        """Measure the agent's own footprint (call once it runs, before data arrives)."""
        self.idle = process_memory()
        room = self.limit - self.duckdb_share - self.idle["anon"]
        self.in_flight_limit = max(room // _MEMORY_PER_ACCOUNTED_BYTE, MIN_IN_FLIGHT)

    def _current_anon(self, *, fresh: bool = False) -> int:
        now = self._clock()
        if fresh or now - self._anon_at >= _RSS_SAMPLE_SECONDS:
            self._anon, self._anon_at = anonymous_rss(), now
        return self._anon

    @contextlib.contextmanager
    def reserve(self, estimate: int) -> Iterator[None]:
        """Hold `estimate` bytes for the block, or raise MemoryBudgetExceededError at once."""
        held = self.hold(estimate)
        try:
            yield
        finally:
            held.release()

    def hold(self, estimate: int) -> Held:
        """Hold `estimate` bytes until `release()` (they may `grow`), or raise MemoryBudgetExceededError."""
        held = Held(self)
        held.grow(estimate)
        return held

    def _grow(self, held: Held, estimate: int) -> None:
        with self._lock:
            queued = self._queued_bytes()
            # What this holder has already is not "something else in flight": one request larger than
            # the share alone is let through.
            busy = self._decoding + queued - held.bytes
            if busy and busy + held.bytes + estimate > self.in_flight_limit:
                self._refuse(
                    f"memory budget: {busy // 1024} KiB in flight + this request (~{estimate // 1024} KiB) would "
                    f"pass the {self.in_flight_limit // 1024} KiB share of limits.memory"
                )
            anon = self._current_anon()
            high_water = self.limit * _RSS_HIGH_WATER
            if busy and anon > high_water and self._clock() - self._trimmed_at >= _TRIM_BEFORE_REFUSAL_SECONDS:
                # Much of what looks used may be free heap glibc has not handed back yet: hand it
                # back and look again before refusing a sender for memory the agent does not use.
                self._trimmed_at = self._clock()
                trim_heap()
                anon = self._current_anon(fresh=True)
            if busy and anon > high_water:
                self._refuse(
                    f"memory budget: the agent uses {anon // (1024 * 1024)} MiB, near limits.memory "
                    f"({self.limit // (1024 * 1024)} MiB); wait for data in flight to be written"
                )
            trim = anon > self.limit * _TRIM_AT and self._clock() - self._trimmed_at >= _TRIM_SECONDS
            if trim:
                self._trimmed_at = self._clock()
            self._decoding += estimate
            held.bytes += estimate
        if trim:
            trim_heap()

    def _release(self, held: Held) -> None:
        with self._lock:
            self._decoding -= held.bytes
            held.bytes = 0

    def _refuse(self, message: str) -> None:
        self.refusals += 1
        self.last_refusal = message
        raise MemoryBudgetExceededError(message)

    def status(self) -> dict[str, Any]:
        now = process_memory()
        return {
            "limit_bytes": self.limit,
            "duckdb_share_bytes": self.duckdb_share,
            "in_flight_limit_bytes": self.in_flight_limit,
            "in_flight_bytes": self._decoding + self._queued_bytes(),
            "decoding_bytes": self._decoding,
            "rss_bytes": now["rss"],
            "anon_rss_bytes": now["anon"],
            "file_rss_bytes": now["file"],
            "peak_rss_bytes": now["peak"],
            "idle_rss_bytes": self.idle.get("rss"),
            "idle_anon_rss_bytes": self.idle.get("anon"),
            "refusals": self.refusals,
            "last_refusal": self.last_refusal,
        }
