"""A proc_events record, decoded."""

from __future__ import annotations

from dataclasses import dataclass

from coral_ebpf.probes.layout import record_at, text
from coral_ebpf.probes.proc_events.layout import EVENT_EXEC, EVENT_FORK, KIND_NAMES, ProcEventRecord


@dataclass(frozen=True, slots=True)
class ProcEvent:
    kind: str  # exec | exit | fork
    ts_ns: int  # CLOCK_MONOTONIC
    cgroup_id: int
    pid: int  # thread id
    tgid: int  # process id
    netns: int  # inode of the task's network namespace, 0 if unknown
    comm: str
    filename: str  # exec: the path given to execve, else ""
    child_pid: int  # fork: the new process, else 0


def decode(data: int, size: int) -> ProcEvent | None:
    """The record at address `data` (from BCC's callback), or None if it is short or of an unknown kind."""
    record = record_at(ProcEventRecord, data, size)
    kind = KIND_NAMES.get(record.kind) if record is not None else None
    if record is None or kind is None:
        return None
    return ProcEvent(
        kind=kind,
        ts_ns=record.ts_ns,
        cgroup_id=record.cgroup_id,
        pid=record.pid,
        tgid=record.tgid,
        netns=record.netns,
        comm=text(record.comm),
        filename=text(record.filename) if record.kind == EVENT_EXEC else "",
        child_pid=record.other_pid if record.kind == EVENT_FORK else 0,
    )
