"""Loader for `bpf/http_red.bpf.c`: compile with the settings, wire tail calls, feed targets, read events."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from coral_ebpf.bcc_runtime import BpfCompileError, load_function, load_program
from coral_ebpf.red.events import COUNTER_NAMES, TAIL_PROGRAMS
from coral_ebpf.red.settings import RedSettings

log = logging.getLogger(__name__)

PROGRAM = "http_red"
PAGE_SIZE = 4096
FILTER_SLOTS = 4096  # RED_FILTER_SLOTS in the BPF program


def _pages(size: int, cpus: int = 1) -> int:
    """Power-of-two page count for `size` bytes (split over `cpus` per-CPU buffers)."""
    wanted = max(1, size // PAGE_SIZE // max(cpus, 1))
    pages = 1
    while pages * 2 <= wanted:
        pages *= 2
    return pages


class HttpRedProbe:
    """The loaded BPF program. Not thread-safe: one thread polls, `set_targets` takes a lock."""

    def __init__(self, state_dir: Path, settings: RedSettings, on_records: Callable[[list[bytes]], None]) -> None:
        self._state_dir = state_dir
        self._settings = settings
        self._on_records = on_records
        self._records: list[bytes] = []
        self._bpf: Any = None
        self._lock = threading.Lock()
        self._targets: set[int] = set()
        self._filter_slots: set[int] = set()  # non-zero slots of target_filter
        self.transport = ""
        self.perf_lost = 0  # perf-buffer events the kernel could not deliver (ring buffers count in `counters`)

    def defines(self, ringbuf: bool) -> dict[str, int | str]:
        s = self._settings
        return {
            "RED_MAX_CONNS": s.max_connections,
            "RED_PATH_MAX": s.path_max,
            "RED_DEPTH": s.pipeline_depth,
            "RED_USE_RINGBUF": 1 if ringbuf else 0,
            "RED_RINGBUF_PAGES": _pages(s.event_buffer_size),
            "RED_INFER_CONNS": 1 if s.track_preexisting_connections else 0,
        }

    def load(self) -> None:
        """Compile and attach; with `event_transport: auto`, a kernel without ring buffers gets perf buffers."""
        transport = self._settings.event_transport
        ringbuf_error: BpfCompileError | None = None
        if transport in ("auto", "ringbuf"):
            try:
                self._bpf = load_program(PROGRAM, self._state_dir, defines=self.defines(ringbuf=True))
                self.transport = "ringbuf"
            except BpfCompileError as exc:
                if transport == "ringbuf":
                    raise
                ringbuf_error = exc
                log.info(
                    "the ring-buffer build failed; trying the perf buffer", extra={"fields": {"error": exc.message}}
                )
        if self._bpf is None:
            try:
                self._bpf = load_program(PROGRAM, self._state_dir, defines=self.defines(ringbuf=False))
            except BpfCompileError as exc:
                if ringbuf_error is None:
                    raise
                # Both builds failed: the ring-buffer error is the one that matters on any kernel >= 5.8.
                raise BpfCompileError(
                    f"{ringbuf_error.message}; with a perf buffer instead: {exc.message}", ringbuf_error.hint
                ) from exc
            self.transport = "perf"
        self._wire_tail_calls()
        self._open_events()
        pending, self._targets = self._targets, set()
        self.set_targets(pending)  # targets given before the program existed

    def _wire_tail_calls(self) -> None:
        import bcc

        tails = self._bpf[b"tails"]
        for slot, name in enumerate(TAIL_PROGRAMS):
            fn = load_function(self._bpf, PROGRAM, name, bcc.BPF.TRACEPOINT, self._state_dir)
            tails[ctypes.c_int(slot)] = ctypes.c_int(fn.fd)

    def _open_events(self) -> None:
        # BCC calls back once per event: the callback only copies the bytes out, and `poll` hands
        # them over together (decoding each event here cost as much as the BPF program itself).
        string_at = ctypes.string_at

        def handle(_ctx: Any, data: Any, size: int) -> int:
            self._records.append(string_at(data, size))
            return 0  # BCC's ring-buffer wrapper calls int() on this: None would raise and be caught, per event

        events = self._bpf[b"events"]
        if self.transport == "ringbuf":
            events.open_ring_buffer(handle)
        else:
            import os

            cpus = os.cpu_count() or 1
            events.open_perf_buffer(
                handle,
                page_cnt=_pages(self._settings.event_buffer_size, cpus),
                lost_cb=self._lost,
                wakeup_events=64,
            )

    def _lost(self, count: int) -> None:
        self.perf_lost += count

    def poll(self) -> None:
        """Hand every event waiting in the buffer to `on_records`, raw, in one list (no wait: events
        are sent without wakeups)."""
        if self._bpf is None:
            return
        if self.transport == "ringbuf":
            self._bpf.ring_buffer_consume()
        else:
            self._bpf.perf_buffer_consume()
        if self._records:
            records, self._records = self._records, []
            self._on_records(records)

    def set_targets(self, tgids: Iterable[int]) -> None:
        """Trace exactly these processes; connections of processes no longer traced are forgotten."""
        wanted = set(tgids)
        with self._lock:
            if self._bpf is None:
                self._targets = wanted
                return
            table = self._bpf[b"targets"]
            for tgid in wanted - self._targets:
                table[ctypes.c_uint32(tgid)] = ctypes.c_uint8(1)
            removed = self._targets - wanted
            for tgid in removed:
                with contextlib.suppress(KeyError):
                    del table[ctypes.c_uint32(tgid)]
            self._targets = wanted
            self._write_filter()
            if removed:
                self._forget_connections(removed)

    def _write_filter(self) -> None:
        """Refresh the kernel's pre-filter (`target_filter`): per slot, the targets whose tgid falls there."""
        slots = Counter(tgid % FILTER_SLOTS for tgid in self._targets)
        filter_map = self._bpf[b"target_filter"]
        for slot in set(slots) | self._filter_slots:
            filter_map[ctypes.c_int(slot)] = ctypes.c_uint32(slots.get(slot, 0))
        self._filter_slots = set(slots)

    def _forget_connections(self, tgids: set[int]) -> None:
        conns = self._bpf[b"conns"]
        stale = [key for key in conns if key.tgid in tgids]
        for key in stale:
            with contextlib.suppress(KeyError):
                del conns[key]

    def counters(self) -> dict[str, int]:
        if self._bpf is None:
            return {}
        table = self._bpf[b"counters"]
        result: dict[str, int] = {}
        for index, name in enumerate(COUNTER_NAMES):
            values = table[ctypes.c_int(index)]
            result[name] = int(sum(values))
        result["events_lost"] += self.perf_lost
        return result

    def close(self) -> None:
        with self._lock:
            if self._bpf is not None:
                self._bpf.cleanup()
                self._bpf = None
