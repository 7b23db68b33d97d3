"""From the probes' event channels to discovery's events, in the order they happened.

Each probe's channel is read by a `ProbeIntake`: BCC's consume call runs its callback for every
record, which decodes it into a batch. `Intake` waits on all channels with one epoll and hands
back the ready batches sorted by kernel timestamp, so events from the two probes come out in
the order they happened.

The probes count every record they could not hand over (`channel_lost`);
`lost_since_last_check()` reports increases, which is what triggers a re-sync. In perf-buffer
mode the kernel's own lost-record notices are counted too (`perf_lost_records`), but only the
probe-side count decides, so no loss is counted twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from coral_ebpf.discovery.model import DiscoveryEvent
from coral_ebpf.probes.channel import ChannelPoller, EventChannel, Transport
from coral_ebpf.probes.listen_events import decoder as listen_decoder
from coral_ebpf.probes.proc_events import decoder as proc_decoder

log = logging.getLogger(__name__)

Decoder = Callable[[int, int], DiscoveryEvent | None]


def decode_proc_event(data: int, size: int) -> DiscoveryEvent | None:
    """A proc_events record at address `data`, or None if it is short or unknown."""
    event = proc_decoder.decode(data, size)
    if event is None:
        return None
    return DiscoveryEvent(
        event=event.kind,
        pid=event.pid,
        tgid=event.tgid,
        comm=event.comm,
        netns=event.netns,
        ts_ns=event.ts_ns,
        cgroup_id=event.cgroup_id,
        filename=event.filename,
        child_pid=event.child_pid,
    )


def decode_listen_event(data: int, size: int) -> DiscoveryEvent | None:
    """A listen_events record at address `data`, or None if it is short or unknown."""
    event = listen_decoder.decode(data, size)
    if event is None:
        return None
    return DiscoveryEvent(
        event=event.kind,
        pid=event.pid,
        tgid=event.tgid,
        comm=event.comm,
        netns=event.netns,
        ts_ns=event.ts_ns,
        port=event.port,
        family=event.family,
        cgroup_id=event.cgroup_id,
        address=event.address,
        inode=event.inode,
        sock_id=event.sock_id,
    )


class ProbeIntake:
    """One probe's channel, its records decoded into a batch, and its lost-record count."""

    def __init__(self, name: str, bpf: Any, transport: Transport, size: int, decode: Decoder) -> None:
        self.name = name
        self._decode = decode
        self._batch: list[DiscoveryEvent] = []
        self.lost = 0
        self.decode_errors = 0
        self.received = 0
        self.channel = EventChannel(name, bpf, transport, self._on_record, size)

    @property
    def perf_lost_records(self) -> int:
        return self.channel.perf_lost_records

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

    def take(self) -> list[DiscoveryEvent]:
        batch, self._batch = self._batch, []
        return batch

    def lost_since_last_check(self) -> int:
        total = self.channel.kernel_lost()
        fresh = max(0, total - self.lost)
        self.lost = total
        return fresh


class Intake:
    """Waits on several probes' channels at once."""

    def __init__(self, sources: list[ProbeIntake]) -> None:
        self.sources = sources
        self._owner = {id(source.channel): source for source in sources}
        self._poller = ChannelPoller([source.channel for source in sources])

    def poll(self, timeout_s: float) -> list[DiscoveryEvent]:
        """Events from every channel that became ready within `timeout_s`, oldest first."""
        batch: list[DiscoveryEvent] = []
        for channel in self._poller.poll(timeout_s):
            batch.extend(self._owner[id(channel)].take())
        batch.sort(key=lambda event: event.ts_ns)
        return batch

    def close(self) -> None:
        self._poller.close()
