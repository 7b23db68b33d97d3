"""Loads bpf/listen_events/listen_events.bpf.c."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from coral_ebpf.probes import channel
from coral_ebpf.probes.channel import Transport
from coral_ebpf.probes.listen_events import layout
from coral_ebpf.probes.program import TracepointProgram


class ListenEventsProgram(TracepointProgram):
    name = "listen_events"
    tracepoints = {"sock:inet_sock_set_state": "tracepoint__sock__inet_sock_set_state"}

    def __init__(
        self, state_dir: Path, transport: Transport, size: int, kernel_offsets: Mapping[str, int] | None = None
    ) -> None:
        """`kernel_offsets`: the BTF offsets of common/kernel_offsets.h (none: sockets matched by address)."""
        super().__init__(state_dir, layout.defines() | channel.defines(transport, size) | dict(kernel_offsets or {}))
        self.transport = transport
