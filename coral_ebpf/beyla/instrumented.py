"""Which processes Beyla instruments, counted by pid.

Beyla logs `instrumenting process` once per *executable* (with the pid of the first process it saw
running it), yet it traces every process of that executable: two Python servers give one line. So
the count joins the executables named in those lines with the discovered services running them.
"""

from __future__ import annotations

from collections.abc import Iterable, Set

from coral_ebpf.discovery.model import ServiceEntry


def instrumented_pids(
    executables: Set[str], logged_pids: Set[int], services: Iterable[ServiceEntry], excluded: Set[int] = frozenset()
) -> set[int]:
    """The pids Beyla named, plus every service in its config (not `excluded` from it: the agent, Beyla)
    whose executable Beyla instruments."""
    pids = set(logged_pids)
    pids.update(
        service.pid
        for service in services
        if service.exe and service.exe in executables and service.pid not in excluded
    )
    return pids
