"""The one event channel from a probe to the agent: a BPF ring buffer, or per-CPU perf buffers.

The kernel side is `bpf/common/event_channel.h` (`channel_reserve` / `channel_submit`), built for
one transport by the `-D` defines `defines()` returns. Every probe names its channel `events` and
counts what it could not hand over in the per-CPU `channel_lost` map; in perf-buffer mode the
kernel's own lost-record notices are counted too (`perf_lost_records`).

One vocabulary for every probe: `event_channel: auto | ring_buffer | perf_buffer` and
`event_channel_size` in bytes, the ring buffer's size or, for perf buffers, the total split
over the CPUs (each buffer a power of two pages, at least one).
"""

from __future__ import annotations

import logging
import os
import select
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

from coral_ebpf.probes.runtime import BpfCompileError

log = logging.getLogger(__name__)

PAGE_SIZE = 4096
MIN_SIZE = PAGE_SIZE
CHANNEL_SETTINGS = ("auto", "ring_buffer", "perf_buffer")
_T = TypeVar("_T")

# BCC's callback for one record: (context, address of the record, its size) -> 0
RecordCallback = Callable[[Any, Any, int], int]


class Transport(StrEnum):
    RING_BUFFER = "ring_buffer"  # one buffer shared by all CPUs, kernel >= 5.8
    PERF_BUFFER = "perf_buffer"  # one buffer per CPU, any kernel BPF runs on


def pages_for(size: int, buffers: int = 1) -> int:
    """Pages of each of `buffers` buffers sharing `size` bytes: a power of two, at least 1."""
    wanted = max(1, size // PAGE_SIZE // max(buffers, 1))
    pages = 1
    while pages * 2 <= wanted:
        pages *= 2
    return pages


def defines(transport: Transport, size: int, *, wakeup: bool = True) -> dict[str, int | str]:
    """The `-D` defines that build event_channel.h for `transport`.

    wakeup=False: ring-buffer records wake no reader (BPF_RB_NO_WAKEUP); the reader polls.
    """
    return {
        "CHANNEL_RINGBUF": int(transport is Transport.RING_BUFFER),
        "CHANNEL_PAGES": pages_for(size),
        "CHANNEL_WAKEUP": int(wakeup),
    }


def transport_candidates(setting: str, ringbuf_available: bool | None = None) -> list[Transport]:
    """Transports to try in order: the configured one, or for `auto` the ring buffer then perf buffers.

    `ringbuf_available=False` (the capability probe found no ring buffer map) makes `auto` go
    straight to perf buffers.
    """
    if setting == Transport.RING_BUFFER:
        return [Transport.RING_BUFFER]
    if setting == Transport.PERF_BUFFER:
        return [Transport.PERF_BUFFER]
    if ringbuf_available is False:
        return [Transport.PERF_BUFFER]
    return [Transport.RING_BUFFER, Transport.PERF_BUFFER]


def load_with_fallback(
    setting: str, load: Callable[[Transport], _T], ringbuf_available: bool | None = None
) -> tuple[_T, Transport, str]:
    """`load(transport)` for each candidate transport until one compiles and loads.

    Returns (what `load` returned, its transport, why the ring buffer was given up or "").
    When every candidate fails, the error raised names the ring buffer's failure first: that is
    the one that matters on any kernel >= 5.8.
    """
    candidates = transport_candidates(setting, ringbuf_available)
    ringbuf_error: BpfCompileError | None = None
    for transport in candidates:
        try:
            return load(transport), transport, ringbuf_error.message if ringbuf_error else ""
        except BpfCompileError as exc:
            if transport is Transport.RING_BUFFER and len(candidates) > 1:
                ringbuf_error = exc
                log.warning("ring buffer unavailable, using perf buffers", extra={"fields": {"error": exc.message}})
                continue
            if ringbuf_error is not None:
                raise BpfCompileError(
                    f"{ringbuf_error.message}; with a perf buffer instead: {exc.message}", ringbuf_error.hint
                ) from exc
            raise
    raise AssertionError("no transport candidates")  # transport_candidates never returns []


class EventChannel:
    """The user side of one probe's `events` channel: open it, poll its fds, consume, count losses."""

    def __init__(
        self,
        name: str,
        bpf: Any,
        transport: Transport,
        callback: RecordCallback,
        size: int,
        *,
        wakeup_events: int = 1,
    ) -> None:
        self.name = name
        self.transport = transport
        self.perf_lost_records = 0
        self._bpf = bpf
        events = bpf[b"events"]
        if transport is Transport.RING_BUFFER:
            events.open_ring_buffer(callback)
        else:
            events.open_perf_buffer(
                callback,
                page_cnt=pages_for(size, os.cpu_count() or 1),
                lost_cb=self._on_perf_lost,
                wakeup_events=wakeup_events,
            )

    def _on_perf_lost(self, count: int) -> None:
        self.perf_lost_records += int(count)

    def fds(self) -> list[int]:
        """The fds that become readable when records wait: the ring buffer map, or each CPU's buffer."""
        if self.transport is Transport.RING_BUFFER:
            return [int(self._bpf[b"events"].map_fd)]
        from bcc.libbcc import lib

        return [int(lib.perf_reader_fd(reader)) for reader in self._bpf.perf_buffers.values()]

    def consume(self) -> None:
        """Run the callback for every record waiting now (no wait)."""
        if self.transport is Transport.RING_BUFFER:
            self._bpf.ring_buffer_consume()
        else:
            self._bpf.perf_buffer_consume()

    def kernel_lost(self) -> int:
        """Records the probe could not hand over (channel full), summed over CPUs."""
        table = self._bpf[b"channel_lost"]
        return sum(int(value) for value in table.getvalue(table.Key(0)))


class ChannelPoller:
    """Waits on several channels at once with one epoll."""

    def __init__(self, channels: list[EventChannel]) -> None:
        self.channels = channels
        self._epoll = select.epoll()
        self._owner: dict[int, EventChannel] = {}
        for channel in channels:
            for fd in channel.fds():
                self._epoll.register(fd, select.EPOLLIN)
                self._owner[fd] = channel

    def poll(self, timeout_s: float) -> list[EventChannel]:
        """Consume every channel that became ready within `timeout_s`; returns them."""
        try:
            ready = self._epoll.poll(timeout_s)
        except InterruptedError:
            return []
        channels = {id(self._owner[fd]): self._owner[fd] for fd, _mask in ready if fd in self._owner}
        for channel in channels.values():
            channel.consume()
        return list(channels.values())

    def close(self) -> None:
        self._epoll.close()
