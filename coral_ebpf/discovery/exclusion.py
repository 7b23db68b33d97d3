"""Which processes discovery leaves out: the agent itself, Beyla, and the configured glob patterns."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Collection, Sequence

from coral_ebpf.probes.linux.procfs import ProcessInfo

# Beyla and its OpenTelemetry successor (OBI) instrument services; they are not services.
BEYLA_EXECUTABLES = ("beyla", "obi")


class Exclusion:
    """Decides from a process's identity whether it belongs in the registry.

    A pattern is a shell glob (`fnmatch`, case-sensitive) tried against the executable path,
    the executable's file name, the kernel task name (comm) and the service name (the
    environment's, and the one the identity rules give without knowing the ports).
    """

    def __init__(
        self,
        patterns: Sequence[str] = (),
        agent_pids: Collection[int] | None = None,
        beyla_paths: Collection[str] = (),
    ) -> None:
        """`beyla_paths`: Beyla executables known by path (the configured `beyla.binary`), whatever their name."""
        self.patterns = tuple(patterns)
        self.agent_pids = frozenset(agent_pids if agent_pids is not None else (os.getpid(),))
        self.beyla_paths = frozenset(beyla_paths)
        # The kernel's task name is the executable's file name cut to 15 bytes.
        self._beyla_comms = frozenset(BEYLA_EXECUTABLES) | {os.path.basename(p)[:15] for p in self.beyla_paths}

    def reason(self, info: ProcessInfo, name: str = "") -> str | None:
        """Why `info` is excluded, or None if it is a service to keep; `name` is the service name the
        identity rules give it (discovery/identity.py), tried besides the environment's."""
        if info.pid in self.agent_pids:
            return "the agent itself"
        exe_name = os.path.basename(info.exe)
        if exe_name in BEYLA_EXECUTABLES or info.exe in self.beyla_paths:
            return "beyla"
        if not info.exe and info.comm in self._beyla_comms:
            return "beyla"
        candidates = [info.exe, exe_name, info.comm, info.service_name, name]
        for pattern in self.patterns:
            for value in candidates:
                if value and fnmatch.fnmatchcase(value, pattern):
                    return f"matches discovery.exclude pattern {pattern!r}"
        return None

    def reason_for_comm(self, pid: int, comm: str) -> str | None:
        """The same decision when only the pid and task name are known (the process is gone)."""
        if pid in self.agent_pids:
            return "the agent itself"
        if comm in self._beyla_comms:
            return "beyla"
        for pattern in self.patterns:
            if comm and fnmatch.fnmatchcase(comm, pattern):
                return f"matches discovery.exclude pattern {pattern!r}"
        return None
