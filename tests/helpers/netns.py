"""Private network namespaces for tests, so every server a test starts stays off the host's network.

`unshare(CLONE_NEWNET)` moves the calling thread (and the processes it spawns afterwards)
into a new namespace that has only a loopback interface.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

T = TypeVar("T")


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def netns_inode(pid: int | str = "self") -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def bring_up_loopback() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


# The network namespace the test session started in, kept open before it moves into a private one:
# the few steps that must reach the package registry (building the .deb) run there.
_starting_netns: list[int] = []  # its descriptor, once


def enter_private_netns() -> int:
    """Move this thread into a new network namespace with lo up; return its inode."""
    if not _starting_netns:
        _starting_netns.append(os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
    _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    bring_up_loopback()
    return os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino


def in_starting_netns(command: list[str]) -> tuple[list[str], tuple[int, ...]]:
    """`command` made to run in the namespace the session started in, and the fds to pass it.

    For a client of the package registry only (the tests' own namespace has nothing but loopback);
    unchanged when the session never left its namespace (not root).
    """
    if not _starting_netns:
        return command, ()
    fd = _starting_netns[0]
    return ["nsenter", f"--net=/proc/self/fd/{fd}", *command], (fd,)


@contextlib.contextmanager
def named_netns() -> Iterator[str]:
    """An `ip netns` namespace (lo up) that exists for the duration of the block."""
    name = f"coraltest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def run_in_netns(name: str, func: Callable[[], T]) -> T:
    """Run `func` on a thread that has joined the named namespace (sockets it makes live there)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            with open(f"/run/netns/{name}") as handle:
                _check(_libc.setns(handle.fileno(), CLONE_NEWNET), f"setns({name})")
            result.append(func())
        except BaseException as exc:  # re-raised on the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
