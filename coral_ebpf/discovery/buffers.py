"""Drain one probe's ring buffer (or perf buffer) on its own thread and notice lost events.

The probes count every record they could not write (ring buffer full, perf buffer full) in a
per-CPU `lost` map; the reader sums it after each poll round and reports increases, which is
what triggers a re-sync. In perf-buffer mode the kernel's own lost-record notices are counted
too (`perf_lost_records`), but only the probe-side count decides, so no loss is counted twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from coral_ebpf.discovery.model import DiscoveryEvent

log = logging.getLogger(__name__)

BufferMode = Literal["ring_buffer", "perf_buffer"]
POLL_TIMEOUT_MS = 100
LOSS_CHECK_INTERVAL_S = 0.1

Decoder = Callable[[int, int], DiscoveryEvent | None]


class EventReader:
    """One thread per probe: poll, decode, hand each event to `sink`, report losses to `on_loss`."""

    def __init__(
        self,
        name: str,
        bpf: Any,
        *,
        mode: BufferMode,
        decode: Decoder,
        sink: Callable[[DiscoveryEvent], None],
        on_loss: Callable[[str, int], None],
        pages: int,
    ) -> None:
        self.name = name
        self.mode = mode
        self._bpf = bpf
        self._decode = decode
        self._sink = sink
        self._on_loss = on_loss
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = 0
        self.perf_lost_records = 0
        self.decode_errors = 0
        self.received = 0
        if mode == "ring_buffer":
            bpf[b"events"].open_ring_buffer(self._on_record)
        else:
            bpf[b"events"].open_perf_buffer(self._on_record, page_cnt=pages, lost_cb=self._on_perf_lost)

    def _on_record(self, _ctx: Any, data: Any, size: int) -> int:
        try:
            event = self._decode(int(data), int(size))
        except Exception:  # a bad record must not kill the reader
            self.decode_errors += 1
            log.exception("cannot decode a discovery event", extra={"fields": {"probe": self.name}})
            return 0
        if event is None:
            self.decode_errors += 1
            return 0
        self.received += 1
        self._sink(event)
        return 0

    def _on_perf_lost(self, count: int) -> None:
        self.perf_lost_records += int(count)

    def kernel_lost(self) -> int:
        """Records the probe could not write, summed over CPUs."""
        values = self._bpf[b"lost"].getvalue(self._bpf[b"lost"].Key(0))
        return sum(int(value.value if hasattr(value, "value") else value) for value in values)

    def _poll(self) -> None:
        if self.mode == "ring_buffer":
            self._bpf.ring_buffer_poll(POLL_TIMEOUT_MS)
        else:
            self._bpf.perf_buffer_poll(POLL_TIMEOUT_MS)

    def _check_loss(self) -> None:
        total = self.kernel_lost()
        if total > self.lost:
            fresh = total - self.lost
            self.lost = total
            self._on_loss(self.name, fresh)

    def _run(self) -> None:
        last_check = time.monotonic()
        while not self._stop.is_set():
            if not self._running.is_set():
                self._idle.set()
                self._running.wait(0.1)
                continue
            self._idle.clear()
            try:
                self._poll()
                now = time.monotonic()
                if now - last_check >= LOSS_CHECK_INTERVAL_S:
                    last_check = now
                    self._check_loss()
            except Exception:
                log.exception("discovery event reader failed; retrying", extra={"fields": {"probe": self.name}})
                self._stop.wait(0.5)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"coral-discovery-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._running.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def pause(self, timeout: float = 2.0) -> bool:
        """Stop draining (the kernel keeps writing until the buffer is full). For tests of loss handling.

        Returns once the reader is idle (True), or False if it did not settle within `timeout`.
        """
        self._running.clear()
        return self._idle.wait(timeout)

    def resume(self) -> None:
        self._running.set()
