"""The TCP listeners that exist right now, in every network namespace, mapped to the processes holding them.

Namespaces are found through `/proc/<pid>/ns/net` and the `ip netns` bind mounts in
`/run/netns` (a namespace can hold sockets after its last process moved out), deduplicated by
inode. Each is entered with `setns` on a dedicated worker thread (setns changes only the
calling thread, so no other thread of the agent ever changes namespace) and asked for its
LISTEN sockets over netlink sock_diag. Socket inodes are then matched against `/proc/<pid>/fd`.
The worker lives on between calls: a warm thread answers a one-namespace question in ~2 ms
where a fresh one took ~9 ms, and discovery asks such questions on its event path.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import DiagSocket

from coral_ebpf.probes.linux import procfs
from coral_ebpf.probes.linux.namespaces import CLONE_NEWNET, setns

log = logging.getLogger(__name__)

TCP_LISTEN = 10
NETNS_MOUNT_DIRS = (Path("/run/netns"), Path("/var/run/netns"))
# Its one thread starts on first use and is the only thread that ever calls setns.
_NETNS_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coral-netns")
_known_paths: dict[int, Path] = {}  # netns inode -> a path that opened it last time


@dataclass(frozen=True)
class ListeningSocket:
    netns: int
    family: int
    address: str
    port: int
    inode: int
    uid: int


@dataclass
class Snapshot:
    taken_ns: int  # CLOCK_MONOTONIC before the first namespace was read
    sockets: list[ListeningSocket] = field(default_factory=list)
    holders: dict[int, set[int]] = field(default_factory=dict)  # socket inode -> pids
    namespaces: int = 0
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def network_namespaces(proc: Path = procfs.PROC) -> dict[int, Path]:
    """inode -> one path that opens it, for every namespace reachable from /proc and /run/netns."""
    found: dict[int, Path] = {}
    candidates: list[Path] = []
    for directory in NETNS_MOUNT_DIRS:
        try:
            candidates.extend(sorted(directory.iterdir()))
        except OSError:
            continue
    try:
        pids = [entry for entry in os.listdir(proc) if entry.isdigit()]
    except OSError:
        pids = []
    candidates.extend(proc / pid / "ns" / "net" for pid in pids)
    for path in candidates:
        try:
            inode = os.stat(path).st_ino
        except OSError:
            continue  # gone, or not ours to see (e.g. a sandbox's init)
        found.setdefault(inode, path)
    return found


def _dump_current_namespace(netns: int) -> list[ListeningSocket]:
    sockets: list[ListeningSocket] = []
    with DiagSocket() as diag:
        diag.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for message in diag.get_sock_stats(family=family, states=1 << TCP_LISTEN):
                sockets.append(
                    ListeningSocket(
                        netns=netns,
                        family=int(family),
                        address=str(message["idiag_src"]),
                        port=int(message["idiag_sport"]),
                        inode=int(message["idiag_inode"]),
                        uid=int(message["idiag_uid"]),
                    )
                )
    return sockets


def _dump_namespaces(namespaces: dict[int, Path]) -> tuple[list[ListeningSocket], list[str]]:
    sockets: list[ListeningSocket] = []
    errors: list[str] = []
    for inode, path in namespaces.items():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            errors.append(f"netns {inode} ({path}): {exc.strerror or exc}")
            continue
        try:
            setns(fd, CLONE_NEWNET)
            sockets.extend(_dump_current_namespace(inode))
        except Exception as exc:  # one bad namespace must not hide the others
            errors.append(f"netns {inode} ({path}): {exc}")
        finally:
            os.close(fd)
    return sockets, errors


def dump_listeners(namespaces: dict[int, Path]) -> tuple[list[ListeningSocket], list[str]]:
    """LISTEN sockets of each namespace, read on the namespace worker thread; (sockets, errors)."""
    return _NETNS_WORKER.submit(_dump_namespaces, namespaces).result()


def listeners_in(netns: int) -> list[ListeningSocket] | None:
    """LISTEN sockets of one namespace, or None if it cannot be reached any more."""
    for attempt in range(2):
        path = _known_paths.get(netns)
        if path is None or attempt:
            _known_paths.clear()
            _known_paths.update(network_namespaces())
            path = _known_paths.get(netns)
            if path is None:
                return None
        sockets, errors = dump_listeners({netns: path})
        if not errors:
            return sockets
        log.debug("netns read failed", extra={"fields": {"netns": netns, "errors": errors}})
    return None


def take_snapshot(only_netns: Iterable[int] | None = None) -> Snapshot:
    """Every LISTEN socket on the host (or in `only_netns`) and the pids that hold each one."""
    started = time.monotonic()
    snapshot = Snapshot(taken_ns=time.monotonic_ns())
    namespaces = network_namespaces()
    if only_netns is not None:
        wanted = set(only_netns)
        namespaces = {inode: path for inode, path in namespaces.items() if inode in wanted}
    if only_netns is None:
        _known_paths.clear()
        _known_paths.update(namespaces)
    snapshot.namespaces = len(namespaces)
    snapshot.sockets, snapshot.errors = dump_listeners(namespaces)
    snapshot.holders = procfs.holders_of({item.inode for item in snapshot.sockets})
    snapshot.duration_s = time.monotonic() - started
    return snapshot
