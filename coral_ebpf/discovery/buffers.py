"""Read the probes' ring buffers (or perf buffers) from one thread, and notice lost events.

Both probes' buffers are watched with one epoll: a ring buffer's map fd is readable when it
holds data, and so is each CPU's perf buffer fd. When one is ready, BCC's consume call runs
our callback for every record, which decodes it into a batch; the caller applies the batch
sorted by kernel timestamp, so events from the two probes come out in the order they happened.

The probes count every record they could not write (buffer full) in a per-CPU `lost` map.
`lost_since_last_check()` reports increases; that is what triggers a re-sync. In perf-buffer
mode the kernel's own lost-record notices are counted too (`perf_lost_records`), but only the
probe-side count decides, so no loss is counted twice.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Callable
from typing import Any, Literal

from coral_ebpf.discovery.model import DiscoveryEvent

log = logging.getLogger(__name__)

BufferMode = Literal["ring_buffer", "perf_buffer"]
Decoder = Callable[[int, int], DiscoveryEvent | None]


class EventSource:
    """One probe's buffer: its pollable fds, a consume call, and its lost-record counter."""

    def __init__(self, name: str, bpf: Any, *, mode: BufferMode, decode: Decoder, pages: int) -> None:
        self.name = name
        self.mode = mode
        self._bpf = bpf
        self._decode = decode
        self._batch: list[DiscoveryEvent] = []
        self.lost = 0
        self.perf_lost_records = 0
        self.decode_errors = 0
        self.received = 0
        if mode == "ring_buffer":
            bpf[b"events"].open_ring_buffer(self._on_record)
        else:
            bpf[b"events"].open_perf_buffer(self._on_record, page_cnt=pages, lost_cb=self._on_perf_lost)

    def fds(self) -> list[int]:
        if self.mode == "ring_buffer":
            return [int(self._bpf[b"events"].map_fd)]
        from bcc.libbcc import lib

        return [int(lib.perf_reader_fd(reader)) for reader in self._bpf.perf_buffers.values()]

    def _on_record(self, _ctx: Any, data: Any, size: int) -> int:
        try:
            event = self._decode(int(data), int(size))
        except Exception:  # a bad record must not stop the others
            event = None
            log.exception("cannot decode a discovery event", extra={"fields": {"probe": self.name}})
        if event is None:
            self.decode_errors += 1
        else:
            self.received += 1
            self._batch.append(event)
        return 0

    def _on_perf_lost(self, count: int) -> None:
        self.perf_lost_records += int(count)

    def consume(self) -> list[DiscoveryEvent]:
        """Every record waiting in the buffer, decoded."""
        if self.mode == "ring_buffer":
            self._bpf.ring_buffer_consume()
        else:
            self._bpf.perf_buffer_consume()
        batch, self._batch = self._batch, []
        return batch

    def kernel_lost(self) -> int:
        """Records the probe could not write, summed over CPUs."""
        table = self._bpf[b"lost"]
        return sum(int(value) for value in table.getvalue(table.Key(0)))

    def lost_since_last_check(self) -> int:
        total = self.kernel_lost()
        fresh = max(0, total - self.lost)
        self.lost = total
        return fresh


class Poller:
    """Waits on several EventSources at once."""

    def __init__(self, sources: list[EventSource]) -> None:
        self.sources = sources
        self._epoll = select.epoll()
        self._owner: dict[int, EventSource] = {}
        for source in sources:
            for fd in source.fds():
                self._epoll.register(fd, select.EPOLLIN)
                self._owner[fd] = source

    def poll(self, timeout_s: float) -> list[DiscoveryEvent]:
        """Events from every source that became ready within `timeout_s`, oldest first."""
        try:
            ready = self._epoll.poll(timeout_s)
        except InterruptedError:
            return []
        sources = {id(self._owner[fd]): self._owner[fd] for fd, _mask in ready if fd in self._owner}
        batch: list[DiscoveryEvent] = []
        for source in sources.values():
            batch.extend(source.consume())
        batch.sort(key=lambda event: event.ts_ns)
        return batch

    def drain(self) -> list[DiscoveryEvent]:
        """Whatever is buffered now, without waiting."""
        batch = [event for source in self.sources for event in source.consume()]
        batch.sort(key=lambda event: event.ts_ns)
        return batch

    def close(self) -> None:
        self._epoll.close()
