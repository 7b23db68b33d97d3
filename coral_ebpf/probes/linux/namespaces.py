"""setns(2): move the calling thread into another namespace."""

from __future__ import annotations

from coral_ebpf.probes.linux.libc import LIBC, check

CLONE_NEWNET = 0x40000000


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Enter the namespace open at `fd` (the calling thread only); OSError when refused."""
    check(LIBC.setns(fd, nstype), "setns")
