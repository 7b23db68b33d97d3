"""Loads bpf/http_red/http_red.bpf.c: compile with the settings, wire tail calls, feed targets, read events."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral_ebpf.probes import channel
from coral_ebpf.probes.channel import EventChannel, Transport, load_with_fallback
from coral_ebpf.probes.http_red import layout
from coral_ebpf.probes.http_red.layout import COUNTER_NAMES, FILTER_SLOTS, TAIL_PROGRAMS
from coral_ebpf.probes.program import close_bpf
from coral_ebpf.probes.runtime import load_function, load_program

log = logging.getLogger(__name__)

PROGRAM = "http_red"
PERF_WAKEUP_EVENTS = 64  # perf buffers: wake the reader once per this many events, not per event


@dataclass(frozen=True)
class HttpRedConfig:
    """What the program is built with (the RED engine's settings, as the probe needs them)."""

    max_connections: int = 16384
    path_max: int = 128  # power of two, 32..256
    pipeline_depth: int = 4  # power of two
    track_preexisting_connections: bool = True
    event_channel: str = "auto"  # auto | ring_buffer | perf_buffer
    event_channel_size: int = 4 * 1024 * 1024


class HttpRedProbe:
    """The loaded BPF program. Not thread-safe: one thread polls, `set_targets` takes a lock."""

    def __init__(self, state_dir: Path, settings: HttpRedConfig, on_records: Callable[[list[bytes]], None]) -> None:
        self._state_dir = state_dir
        self._settings = settings
        self._on_records = on_records
        self._records: list[bytes] = []
        self._bpf: Any = None
        self._lock = threading.Lock()
        self._targets: set[int] = set()
        self._filter_slots: set[int] = set()  # non-zero slots of target_filter
        self._channel: EventChannel | None = None
        self.transport = ""

    def defines(self, transport: Transport) -> dict[str, int | str]:
        s = self._settings
        settings: dict[str, int | str] = {
            "RED_MAX_CONNS": s.max_connections,
            "RED_PATH_MAX": s.path_max,
            "RED_DEPTH": s.pipeline_depth,
            "RED_INFER_CONNS": 1 if s.track_preexisting_connections else 0,
        }
        # No wakeup per event: `poll` runs on the engine's own schedule.
        return settings | layout.defines() | channel.defines(transport, s.event_channel_size, wakeup=False)

    def load(self) -> None:
        """Compile and attach; with `event_channel: auto`, a kernel without ring buffers gets perf buffers."""
        self._bpf, transport, _ringbuf_error = load_with_fallback(
            self._settings.event_channel,
            lambda transport: load_program(PROGRAM, self._state_dir, defines=self.defines(transport)),
        )
        self.transport = transport.value
        self._wire_tail_calls()
        self._open_events(transport)
        pending, self._targets = self._targets, set()
        self.set_targets(pending)  # targets given before the program existed

    def _wire_tail_calls(self) -> None:
        import bcc

        tails = self._bpf[b"tails"]
        for slot, name in TAIL_PROGRAMS.items():
            fn = load_function(self._bpf, PROGRAM, name, bcc.BPF.TRACEPOINT, self._state_dir)
            tails[ctypes.c_int(int(slot))] = ctypes.c_int(fn.fd)

    def _open_events(self, transport: Transport) -> None:
        # BCC calls back once per event: the callback only copies the bytes out, and `poll` hands
        # them over together (decoding each event here cost as much as the BPF program itself).
        string_at = ctypes.string_at

        def handle(_ctx: Any, data: Any, size: int) -> int:
            self._records.append(string_at(data, size))
            return 0  # BCC's ring-buffer wrapper calls int() on this: None would raise and be caught, per event

        self._channel = EventChannel(
            PROGRAM,
            self._bpf,
            transport,
            handle,
            self._settings.event_channel_size,
            wakeup_events=PERF_WAKEUP_EVENTS,
        )

    def poll(self) -> None:
        """Hand every event waiting in the channel to `on_records`, raw, in one list (no wait: events
        are sent without wakeups)."""
        if self._channel is None:
            return
        self._channel.consume()
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
        for counter, name in COUNTER_NAMES.items():
            result[name] = int(sum(table[ctypes.c_int(int(counter))]))
        if self._channel is not None:
            result["events_lost"] = self._channel.kernel_lost() + self._channel.perf_lost_records
        return result

    def close(self) -> None:
        with self._lock:
            if self._bpf is not None:
                close_bpf(self._bpf, PROGRAM)
                self._bpf = None
                self._channel = None
