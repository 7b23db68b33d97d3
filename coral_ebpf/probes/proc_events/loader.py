"""Loads bpf/proc_events/proc_events.bpf.c and keeps the set of processes it reports on."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Mapping
from pathlib import Path

from coral_ebpf.probes import channel
from coral_ebpf.probes.channel import Transport
from coral_ebpf.probes.linux.mount import tracefs_root
from coral_ebpf.probes.proc_events import layout
from coral_ebpf.probes.program import TracepointProgram


def exit_has_group_dead() -> bool:
    """Kernels >= 6.16 say in sched_process_exit whether the whole thread group died."""
    root = tracefs_root()
    if root is None:
        return False
    try:
        return "group_dead" in (root / "events/sched/sched_process_exit/format").read_text()
    except OSError:
        return False


class ProcEventsProgram(TracepointProgram):
    name = "proc_events"
    tracepoints = {
        "sched:sched_process_exec": "tracepoint__sched__sched_process_exec",
        "sched:sched_process_exit": "tracepoint__sched__sched_process_exit",
        "task:task_newtask": "tracepoint__task__task_newtask",
    }

    def __init__(
        self, state_dir: Path, transport: Transport, size: int, kernel_offsets: Mapping[str, int] | None = None
    ) -> None:
        """`kernel_offsets`: the BTF offsets of common/kernel_offsets.h (none: netns from /proc)."""
        defines = layout.defines() | channel.defines(transport, size) | dict(kernel_offsets or {})
        defines["HAVE_GROUP_DEAD"] = int(exit_has_group_dead())
        super().__init__(state_dir, defines)
        self.transport = transport
        self._watched = self.bpf[b"watched"]

    def watch(self, pid: int) -> None:
        self._watched[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def unwatch(self, pid: int) -> None:
        with contextlib.suppress(KeyError):
            del self._watched[ctypes.c_uint32(pid)]

    def watched_count(self) -> int:
        return len(self._watched)

    def report_all_processes(self, enabled: bool) -> None:
        """Report exec/exit/fork of every process, not just watched ones (for `discover --all`)."""
        self.bpf[b"settings"][ctypes.c_int(0)] = ctypes.c_uint32(1 if enabled else 0)
