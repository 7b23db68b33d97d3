"""Why a SIGKILL ended Beyla: the kernel's OOM killer, or someone outside the agent.

A SIGKILL says nothing about its sender. Two records do:

- the `oom_kill` counter in `memory.events` (cgroup v2) or `memory.oom_control` (v1) of the cgroup the
  agent put Beyla in (beyla.limits.memory_max); it only exists when there is such a cgroup;
- the kernel log (/dev/kmsg, readable by root), where the OOM killer names the process it killed:
  `Out of memory: Killed process 1234 (beyla) ...` or `oom-kill:...,task=beyla,pid=1234,...`.

The evidence is gathered once, when the supervisor sees Beyla die of SIGKILL, and diagnosis.py
turns it into `memory_limit`, `oom_killed` or `killed` (from outside).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

KERNEL_LOG = Path("/dev/kmsg")
MAX_LOG_BYTES = 4 << 20  # the kernel's ring buffer is far smaller; a bound against a runaway reader

_KILLED_PROCESS = re.compile(r"Killed process (\d+)\b")
_OOM_KILL_PID = re.compile(r"oom-kill:.*\bpid=(\d+)\b")


@dataclass(frozen=True)
class KillEvidence:
    cgroup_oom_kills: int | None  # None: Beyla had no cgroup of the agent's, or it was unreadable
    kernel_log_readable: bool
    kernel_oom_line: str | None  # the kernel's line naming Beyla's pid as an OOM victim

    @property
    def oom(self) -> bool:
        return bool(self.cgroup_oom_kills) or self.kernel_oom_line is not None

    @property
    def conclusive(self) -> bool:
        """Whether an absence of OOM records means something (at least one record was readable)."""
        return self.cgroup_oom_kills is not None or self.kernel_log_readable

    def describe(self) -> str:
        parts = []
        if self.cgroup_oom_kills is not None:
            parts.append(f"cgroup memory.events oom_kill {self.cgroup_oom_kills}")
        if self.kernel_oom_line is not None:
            parts.append(f"kernel log: {self.kernel_oom_line}")
        elif self.kernel_log_readable:
            parts.append("no OOM kill of Beyla in the kernel log")
        else:
            parts.append("kernel log not readable")
        return "; ".join(parts)


def oom_line_for_pid(messages: Iterable[str], pid: int) -> str | None:
    """The first kernel log message recording an OOM kill of `pid`."""
    for message in messages:
        for pattern in (_KILLED_PROCESS, _OOM_KILL_PID):
            match = pattern.search(message)
            if match is not None and int(match.group(1)) == pid:
                return message.strip()
    return None


def kmsg_messages(records: Iterable[bytes]) -> list[str]:
    """The message text of /dev/kmsg records (`prio,seq,usec,flags;message`, continuation lines dropped)."""
    messages = []
    for record in records:
        first = record.decode("utf-8", "replace").split("\n", 1)[0]
        _, separator, message = first.partition(";")
        if separator:
            messages.append(message)
    return messages


def read_kernel_log(path: Path = KERNEL_LOG) -> list[str] | None:
    """All records in the kernel's ring buffer, or None when it cannot be read (not root, no /dev/kmsg)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    records: list[bytes] = []
    total = 0
    try:
        while total < MAX_LOG_BYTES:
            try:
                record = os.read(fd, 8192)  # one record per read
            except BlockingIOError:
                break  # the end of the buffer
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten while reading: go on with the next
                    continue
                if not records:
                    return None
                break
            if not record:
                break
            records.append(record)
            total += len(record)
    finally:
        os.close(fd)
    return kmsg_messages(records)


def gather(pid: int, cgroup_oom_kills: int | None, kernel_log: Path = KERNEL_LOG) -> KillEvidence:
    messages = read_kernel_log(kernel_log)
    line = oom_line_for_pid(messages, pid) if messages is not None else None
    return KillEvidence(cgroup_oom_kills, messages is not None, line)
