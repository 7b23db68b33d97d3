"""The service registry: which process listens on which sockets, readable from any thread.

One writer (discovery's tracker, on its processor thread) changes the state through the
methods below and calls `publish()` once per batch; readers call `snapshot()` or subscribe.
Entries are built per (network namespace, process): a process listening in two namespaces
has two entries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from coral_ebpf.discovery.identity import IdentityResolver, ServiceIdentity
from coral_ebpf.discovery.model import DiscoveryEvent, Listener, ServiceEntry
from coral_ebpf.probes.linux.procfs import ProcessInfo

log = logging.getLogger(__name__)

EntriesCallback = Callable[[list[ServiceEntry]], None]
EventCallback = Callable[[DiscoveryEvent], None]
SocketKey = tuple[str, int, int]


def socket_key(netns: int, inode: int, sock_id: int) -> SocketKey:
    """Sockets are known by inode when the kernel layout gives it, else by the kernel's socket id."""
    return ("inode", netns, inode) if inode else ("sock", sock_id, 0)


@dataclass
class TrackedSocket:
    netns: int
    family: int
    address: str
    port: int
    inode: int = 0
    sock_id: int = 0
    holders: set[int] = field(default_factory=set)

    @property
    def key(self) -> SocketKey:
        return socket_key(self.netns, self.inode, self.sock_id)

    def listener(self) -> Listener:
        return Listener(port=self.port, family=self.family, address=self.address, inode=self.inode)


@dataclass
class TrackedProcess:
    info: ProcessInfo
    since_ns: int  # CLOCK_MONOTONIC from which this incarnation is known; older exits are not its own


def service_fields(entry: ServiceEntry) -> dict[str, object]:
    """The fields of a log line about a service: name, rule, pid, ports."""
    fields: dict[str, object] = {"service": entry.name, "rule": str(entry.rule or ""), "pid": entry.pid}
    fields["ports"] = ",".join(str(port) for port in entry.ports)
    if entry.namespace:
        fields["namespace"] = entry.namespace
    return fields


class ServiceRegistry:
    """Thread-safe registry of listening services with change and event subscriptions."""

    def __init__(self, resolver: IdentityResolver | None = None) -> None:
        self.resolver = resolver or IdentityResolver()
        self._identities: dict[tuple[ProcessInfo, tuple[int, ...]], ServiceIdentity] = {}
        self._announced: dict[tuple[int, int], ServiceEntry] = {}  # (netns, pid) -> entry last logged
        self._lock = threading.RLock()
        self._processes: dict[int, TrackedProcess] = {}
        self._sockets: dict[SocketKey, TrackedSocket] = {}
        self._version = 0
        self._published = 0
        self._entries: list[ServiceEntry] | None = []
        self._subscribers: list[EntriesCallback] = []
        self._event_subscribers: list[EventCallback] = []

    # ---- reading (any thread) ----

    def snapshot(self) -> list[ServiceEntry]:
        """The current entries, ordered by network namespace then pid."""
        with self._lock:
            if self._entries is None:
                self._entries = self._build_entries()
            return list(self._entries)

    def _build_entries(self) -> list[ServiceEntry]:
        grouped: dict[tuple[int, int], list[Listener]] = {}
        for tracked in self._sockets.values():
            for pid in tracked.holders:
                grouped.setdefault((tracked.netns, pid), []).append(tracked.listener())
        entries = []
        for (netns, pid), listeners in sorted(grouped.items()):
            process = self._processes.get(pid)
            if process is None:
                continue
            info = process.info
            unique = sorted(set(listeners), key=lambda item: (item.port, item.family, item.address, item.inode))
            identity = self._identity(info, tuple(sorted({listener.port for listener in unique})))
            entries.append(
                ServiceEntry(
                    pid=pid,
                    netns=netns,
                    name=identity.name,
                    exe=info.exe,
                    cmdline=info.cmdline,
                    listeners=tuple(unique),
                    cgroup=info.cgroup,
                    container_id=info.container_id,
                    start_time=info.start_time,
                    comm=info.comm,
                    identity=identity,
                )
            )
        return entries

    def _identity(self, info: ProcessInfo, ports: tuple[int, ...]) -> ServiceIdentity:
        """Resolved once per process image (an exec changes it) and port set (`services:` may select by port)."""
        key = (info, ports)
        identity = self._identities.get(key)
        if identity is None:
            if len(self._identities) > 4 * len(self._processes) + 64:
                self._identities.clear()
            identity = self._identities[key] = self.resolver.resolve(info, ports)
        return identity

    def set_resolver(self, resolver: IdentityResolver) -> None:
        """New naming rules (a config reload): every process is named again."""
        with self._lock:
            self.resolver = resolver
            self._identities.clear()
            self._changed()

    def identity_of(self, pid: int) -> ServiceIdentity | None:
        """The identity of a tracked process (named with the ports it listens on now)."""
        with self._lock:
            process = self._processes.get(pid)
            if process is None:
                return None
            ports = tuple(sorted({tracked.port for tracked in self._sockets.values() if pid in tracked.holders}))
            return self._identity(process.info, ports)

    def service_name(self, pid: int) -> str:
        identity = self.identity_of(pid)
        return identity.name if identity else ""

    def pids(self) -> set[int]:
        with self._lock:
            return set(self._processes)

    def socket_count(self) -> int:
        with self._lock:
            return len(self._sockets)

    @property
    def version(self) -> int:
        """Increases on every change."""
        with self._lock:
            return self._version

    # ---- subscriptions ----

    def subscribe(self, callback: EntriesCallback) -> Callable[[], None]:
        """Call `callback(entries)` after every batch of changes; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)
        return lambda: self._remove(self._subscribers, callback)

    def subscribe_events(self, callback: EventCallback) -> Callable[[], None]:
        """Call `callback(event)` for every event discovery applies (snapshot events at each sync)."""
        with self._lock:
            self._event_subscribers.append(callback)
        return lambda: self._remove(self._event_subscribers, callback)

    def _remove(self, callbacks: list[EntriesCallback] | list[EventCallback], callback: object) -> None:
        with self._lock:
            if callback in callbacks:
                callbacks.remove(callback)  # type: ignore[arg-type]

    def publish(self) -> bool:
        """Tell subscribers about changes since the last publish; True if there were any."""
        with self._lock:
            if self._version == self._published:
                return False
            self._published = self._version
            subscribers = list(self._subscribers)
        entries = self.snapshot()
        self._announce(entries)
        for callback in subscribers:
            try:
                callback(list(entries))
            except Exception:
                log.exception("discovery subscriber failed")
        return True

    def _announce(self, entries: list[ServiceEntry]) -> None:
        """One info line per service that appeared, was renamed or left since the last publish."""
        current = {(entry.netns, entry.pid): entry for entry in entries}
        previous, self._announced = self._announced, current
        for key, entry in current.items():
            before = previous.get(key)
            if before is None or before.name != entry.name or before.start_time != entry.start_time:
                log.info("service appeared", extra={"fields": service_fields(entry)})
        for key, entry in previous.items():
            now = current.get(key)
            if now is None or now.start_time != entry.start_time:
                log.info("service left", extra={"fields": service_fields(entry)})

    def emit(self, event: DiscoveryEvent) -> None:
        with self._lock:
            subscribers = list(self._event_subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("discovery event subscriber failed")

    # ---- writing (the tracker's thread) ----

    def _changed(self) -> None:
        self._version += 1
        self._entries = None

    def process(self, pid: int) -> TrackedProcess | None:
        with self._lock:
            return self._processes.get(pid)

    def put_process(self, info: ProcessInfo, since_ns: int) -> None:
        """Add or refresh a process; a new start time (PID reuse) restarts its `since_ns`."""
        with self._lock:
            current = self._processes.get(info.pid)
            if current is not None and current.info == info:
                return
            same_incarnation = current is not None and current.info.start_ticks == info.start_ticks
            since = current.since_ns if current is not None and same_incarnation else since_ns
            self._processes[info.pid] = TrackedProcess(info, since)
            self._changed()

    def drop_process(self, pid: int) -> list[TrackedSocket]:
        """Forget a process; returns the sockets it was the last known holder of (now orphans)."""
        with self._lock:
            orphans = []
            if self._processes.pop(pid, None) is not None:
                self._changed()
            for tracked in self._sockets.values():
                if pid in tracked.holders:
                    tracked.holders.discard(pid)
                    self._changed()
                    if not tracked.holders:
                        orphans.append(tracked)
            return orphans

    def socket(self, key: SocketKey) -> TrackedSocket | None:
        with self._lock:
            return self._sockets.get(key)

    def sockets(self) -> list[TrackedSocket]:
        with self._lock:
            return list(self._sockets.values())

    def sockets_of(self, pid: int) -> list[TrackedSocket]:
        with self._lock:
            return [tracked for tracked in self._sockets.values() if pid in tracked.holders]

    def add_socket(self, tracked: TrackedSocket, holder: int) -> TrackedSocket:
        """Record that `holder` holds the socket (creating it if new); returns the stored socket."""
        with self._lock:
            stored = self._sockets.get(tracked.key)
            if stored is None:
                stored = tracked
                stored.holders = set()
                self._sockets[tracked.key] = stored
                self._changed()
            if holder not in stored.holders:
                stored.holders.add(holder)
                self._changed()
            return stored

    def rekey_socket(self, tracked: TrackedSocket, port: int | None = None, inode: int | None = None) -> None:
        """Fill in what an event could not tell (the port of an autobound socket, a late-learned inode)."""
        with self._lock:
            old_key = tracked.key
            if port is not None and port != tracked.port:
                tracked.port = port
                self._changed()
            if inode and inode != tracked.inode:
                tracked.inode = inode
                self._changed()
            if tracked.key != old_key and self._sockets.get(old_key) is tracked:
                del self._sockets[old_key]
                existing = self._sockets.get(tracked.key)
                if existing is not None:
                    existing.holders |= tracked.holders
                else:
                    self._sockets[tracked.key] = tracked

    def release_socket(self, tracked: TrackedSocket, holder: int) -> bool:
        """`holder` no longer holds the socket; True if nobody is known to hold it now."""
        with self._lock:
            if holder in tracked.holders:
                tracked.holders.discard(holder)
                self._changed()
            return not tracked.holders

    def remove_socket(self, tracked: TrackedSocket) -> set[int]:
        """The socket closed: forget it; returns the pids that held it."""
        with self._lock:
            if self._sockets.get(tracked.key) is tracked:
                del self._sockets[tracked.key]
                self._changed()
            return set(tracked.holders)

    def replace(self, processes: Iterable[tuple[ProcessInfo, int]], sockets: Iterable[TrackedSocket]) -> None:
        """Swap the whole state for a fresh one (start-up and re-sync)."""
        with self._lock:
            self._processes = {info.pid: TrackedProcess(info, since) for info, since in processes}
            self._sockets = {tracked.key: tracked for tracked in sockets}
            self._changed()
