"""Loader for bpf/proc_events.bpf.c: exec, exit and fork of the processes discovery watches."""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

from coral_ebpf.capabilities.mounts import tracefs_root
from coral_ebpf.discovery.buffers import BufferMode
from coral_ebpf.discovery.events import decode_proc_event
from coral_ebpf.discovery.kernel_layout import KernelLayout
from coral_ebpf.discovery.program import DiscoveryProgram

decode = decode_proc_event


def exit_has_group_dead() -> bool:
    """Kernels >= 6.16 say in sched_process_exit whether the whole thread group died."""
    root = tracefs_root()
    if root is None:
        return False
    try:
        return "group_dead" in (root / "events/sched/sched_process_exit/format").read_text()
    except OSError:
        return False


class ProcEventsProgram(DiscoveryProgram):
    name = "proc_events"
    tracepoints = {
        "sched:sched_process_exec": "tracepoint__sched__sched_process_exec",
        "sched:sched_process_exit": "tracepoint__sched__sched_process_exit",
        "task:task_newtask": "tracepoint__task__task_newtask",
    }

    def __init__(self, state_dir: Path, layout: KernelLayout, mode: BufferMode, pages: int) -> None:
        super().__init__(state_dir, layout, mode, pages, {"HAVE_GROUP_DEAD": int(exit_has_group_dead())})
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
