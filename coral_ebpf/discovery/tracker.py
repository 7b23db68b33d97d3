"""Discovery's state machine: kernel events and snapshots in, registry changes out.

Rules (docs/discovery.md has the reasoning):
- listen: the current task is the listener; its process joins the registry (watched first, then
  read from /proc, so its exit cannot slip between the two).
- close: the socket is gone for every process that held it.
- exit: the process leaves; sockets nobody else is known to hold are checked again after a grace
  period (a daemon's child, or a process it passed the socket to, may hold them).
- exec: same pid, new identity; sockets closed on exec (CLOEXEC) are released.
- fork: after a grace period, the child joins if it still holds its parent's listening sockets.
- A snapshot replaces the state; events older than it are dropped (it already reflects them).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable

from coral_ebpf.discovery.exclusion import Exclusion
from coral_ebpf.discovery.model import DiscoveryEvent
from coral_ebpf.discovery.registry import ServiceRegistry, TrackedProcess, TrackedSocket, socket_key
from coral_ebpf.discovery.snapshot import Snapshot
from coral_ebpf.discovery.sources import NoWatcher, ProcessSource, ProcfsSource, Watcher
from coral_ebpf.probes.linux.procfs import ProcessInfo

log = logging.getLogger(__name__)

EVENT_KINDS = ("listen", "close", "exec", "exit", "fork")
OUTCOMES = ("superseded", "stale", "short_lived", "excluded", "pid_reuse", "inherited", "unattributed")
FORK_GRACE_NS = 100_000_000
ORPHAN_GRACE_NS = 200_000_000
RECENT_EXIT_KEEP_NS = 30_000_000_000


class Tracker:
    """Applies events to a ServiceRegistry. Single-threaded: call everything from one thread."""

    def __init__(
        self,
        registry: ServiceRegistry,
        exclusion: Exclusion,
        *,
        source: ProcessSource | None = None,
        watcher: Watcher | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        fork_grace_ns: int = FORK_GRACE_NS,
        orphan_grace_ns: int = ORPHAN_GRACE_NS,
    ) -> None:
        self.registry = registry
        self.exclusion = exclusion
        self.source: ProcessSource = source or ProcfsSource()
        self.watcher: Watcher = watcher or NoWatcher()
        self.clock = clock
        self.fork_grace_ns = fork_grace_ns
        self.orphan_grace_ns = orphan_grace_ns
        # Every key exists from the start, so another thread can copy these while they count.
        self.counts: Counter[str] = Counter(dict.fromkeys(EVENT_KINDS, 0))  # events received, by kind
        self.outcomes: Counter[str] = Counter(dict.fromkeys(OUTCOMES, 0))
        self._floor_ns = 0
        self._recent_exits: dict[int, int] = {}
        self._excluded: dict[int, int] = {}  # pid -> start ticks of the excluded incarnation
        self._due: list[tuple[int, int, str, tuple[int, ...]]] = []
        self._sequence = itertools.count()
        self._pending_forks: dict[int, int] = {}  # child -> parent

    # ---- events ----

    def handle(self, event: DiscoveryEvent) -> None:
        self.counts[event.event] += 1
        if event.ts_ns < self._floor_ns:
            self.outcomes["superseded"] += 1  # the snapshot taken after it already shows its effect
            return
        handler = {
            "listen": self._on_listen,
            "close": self._on_close,
            "exit": self._on_exit,
            "exec": self._on_exec,
            "fork": self._on_fork,
        }.get(event.event)
        if handler is not None:
            handler(event)

    def _emit(self, event: DiscoveryEvent, **changes: object) -> None:
        for key, value in self._named(event.tgid).items():
            changes.setdefault(key, value)
        self.registry.emit(dataclasses.replace(event, **changes) if changes else event)  # type: ignore[arg-type]

    def _name_of(self, info: ProcessInfo) -> str:
        """The name `discovery.exclude` also matches: the identity rules' (ports not known yet)."""
        return self.registry.resolver.resolve(info).name

    def _named(self, pid: int) -> dict[str, str]:
        identity = self.registry.identity_of(pid)
        return {"service": identity.name, "rule": str(identity.rule)} if identity else {}

    def _is_excluded(self, pid: int) -> bool:
        ticks = self._excluded.get(pid)
        if ticks is None:
            return False
        if self.source.start_ticks(pid) == ticks:
            return True
        del self._excluded[pid]
        return False

    def _ensure_process(self, pid: int, ts_ns: int, comm: str) -> tuple[TrackedProcess | None, str]:
        """The tracked process for `pid`, joining it if new: (process, "known"|"new"|"gone"|"excluded"|"stale")."""
        known = self.registry.process(pid)
        if known is not None and (not comm or known.info.comm == comm):
            return known, "known"
        if self._is_excluded(pid):
            return None, "excluded"
        last_exit = self._recent_exits.get(pid)
        if last_exit is not None and ts_ns <= last_exit:
            return None, "stale"
        self.watcher.watch(pid)  # before reading /proc: an exit after this point is reported
        info = self.source.inspect(pid)
        if info is None:
            if known is None:
                self.watcher.unwatch(pid)
            reason = self.exclusion.reason_for_comm(pid, comm)
            return None, "excluded" if reason else "gone"
        reason = self.exclusion.reason(info, self._name_of(info))
        if reason is not None:
            self.watcher.unwatch(pid)
            self._excluded[pid] = info.start_ticks
            if len(self._excluded) > 4096:
                self._excluded.pop(next(iter(self._excluded)))
            self.outcomes["excluded"] += 1
            log.debug("process excluded", extra={"fields": {"pid": pid, "exe": info.exe, "reason": reason}})
            if known is not None:
                self._schedule_orphans(self.registry.drop_process(pid))
            return None, "excluded"
        if known is not None and known.info.start_ticks != info.start_ticks:
            self.outcomes["pid_reuse"] += 1  # the old incarnation's exit never reached us
            self._schedule_orphans(self.registry.drop_process(pid))
        self.registry.put_process(info, ts_ns)
        return self.registry.process(pid), "new"

    def _on_listen(self, event: DiscoveryEvent) -> None:
        netns = event.netns or self.source.thread_netns(event.tgid, event.pid)
        process, outcome = self._ensure_process(event.tgid, event.ts_ns, event.comm)
        if outcome == "excluded":
            return
        if outcome == "stale":
            self.outcomes["stale"] += 1
            return
        self._emit(event, netns=netns)
        if process is None:
            self.outcomes["short_lived"] += 1
            return
        tracked = self.registry.add_socket(
            TrackedSocket(
                netns=netns,
                family=event.family or 0,
                address=event.address,
                port=event.port or 0,
                inode=event.inode,
                sock_id=event.sock_id,
            ),
            event.tgid,
        )
        if not tracked.port:
            self._resolve_port(tracked, event.tgid)

    def _find_closed(self, event: DiscoveryEvent, netns: int) -> TrackedSocket | None:
        if event.inode:
            return self.registry.socket(socket_key(netns, event.inode, 0))
        by_id = self.registry.socket(socket_key(netns, 0, event.sock_id)) if event.sock_id else None
        if by_id is not None:
            return by_id
        # Without the kernel layout, snapshot sockets are matched on address; prefer the closer's own.
        same = [
            tracked
            for tracked in self.registry.sockets()
            if tracked.netns == netns
            and tracked.port == event.port
            and tracked.family == event.family
            and tracked.address == event.address
        ]
        own = [tracked for tracked in same if event.tgid in tracked.holders]
        candidates = own or same
        return candidates[0] if len(candidates) == 1 else None

    def _on_close(self, event: DiscoveryEvent) -> None:
        netns = event.netns or self.source.thread_netns(event.tgid, event.pid)
        tracked = self._find_closed(event, netns)
        if tracked is None and self._is_excluded(event.tgid):
            return
        self._emit(event, netns=netns)
        if tracked is None:
            return
        for holder in self.registry.remove_socket(tracked):
            if not self.registry.sockets_of(holder):
                self.registry.drop_process(holder)
                self.watcher.unwatch(holder)

    def _on_exit(self, event: DiscoveryEvent) -> None:
        pid = event.tgid
        self._remember_exit(pid, event.ts_ns)
        self._excluded.pop(pid, None)
        known = self.registry.process(pid)
        if known is not None and event.ts_ns < known.since_ns:
            self.outcomes["stale"] += 1  # an earlier process with this pid
            return
        self._emit(event)
        if known is None:
            self.watcher.unwatch(pid)
            return
        for child, parent in list(self._pending_forks.items()):
            if parent == pid:
                self._check_fork(child, parent)  # before the parent's sockets are orphaned
        self._schedule_orphans(self.registry.drop_process(pid))
        self.watcher.unwatch(pid)

    def _on_exec(self, event: DiscoveryEvent) -> None:
        pid = event.tgid
        known = self.registry.process(pid)
        if known is None:
            if not self._is_excluded(pid):
                self._emit(event)
            return
        info = self.source.inspect(pid)
        if info is None:
            self._emit(event)
            return  # it is already exiting; the exit event follows
        if self.exclusion.reason(info, self._name_of(info)) is not None:
            self._excluded[pid] = info.start_ticks
            self.outcomes["excluded"] += 1
            self._schedule_orphans(self.registry.drop_process(pid))
            self.watcher.unwatch(pid)
            return
        self.registry.put_process(info, known.since_ns)
        self._emit(event)  # named by the identity rules, with the new executable
        self._release_unheld(pid)

    def _release_unheld(self, pid: int) -> None:
        """Drop the sockets `pid` no longer has in its fd table (closed on exec, or handed over)."""
        held = self.source.socket_inodes(pid)
        for tracked in self.registry.sockets_of(pid):
            if not tracked.inode:
                self._learn_inode(tracked)
            if tracked.inode and tracked.inode not in held and self.registry.release_socket(tracked, pid):
                self._schedule_orphans([tracked])
        if not self.registry.sockets_of(pid):
            self.registry.drop_process(pid)
            self.watcher.unwatch(pid)

    def _on_fork(self, event: DiscoveryEvent) -> None:
        if self.registry.process(event.tgid) is None or not event.child_pid:
            if not self._is_excluded(event.tgid):
                self._emit(event)
            return
        self._emit(event)
        self._pending_forks[event.child_pid] = event.tgid
        self._schedule(self.clock() + self.fork_grace_ns, "fork", (event.child_pid, event.tgid))

    # ---- deferred checks ----

    def _schedule(self, due_ns: int, kind: str, payload: tuple[int, ...]) -> None:
        heapq.heappush(self._due, (due_ns, next(self._sequence), kind, payload))

    def _schedule_orphans(self, orphans: list[TrackedSocket]) -> None:
        due = self.clock() + self.orphan_grace_ns
        for tracked in orphans:
            key = tracked.key
            self._schedule(due, "orphan", (0 if key[0] == "inode" else 1, key[1], key[2]))

    def next_due_ns(self) -> int | None:
        return self._due[0][0] if self._due else None

    def run_due(self, now_ns: int | None = None) -> None:
        now = self.clock() if now_ns is None else now_ns
        while self._due and self._due[0][0] <= now:
            _due, _seq, kind, payload = heapq.heappop(self._due)
            if kind == "fork":
                child, parent = payload
                if self._pending_forks.get(child) == parent:
                    self._check_fork(child, parent)
            elif kind == "orphan":
                tag, first, second = payload
                tracked = self.registry.socket(("inode" if tag == 0 else "sock", first, second))
                if tracked is not None and not tracked.holders:
                    self._verify_orphan(tracked)
        if len(self._recent_exits) > 10_000:
            self._recent_exits = {pid: ts for pid, ts in self._recent_exits.items() if now - ts < RECENT_EXIT_KEEP_NS}

    def _remember_exit(self, pid: int, ts_ns: int) -> None:
        self._recent_exits[pid] = max(ts_ns, self._recent_exits.get(pid, 0))

    def _check_fork(self, child: int, parent: int) -> None:
        self._pending_forks.pop(child, None)
        parent_sockets = self.registry.sockets_of(parent)
        for tracked in parent_sockets:
            if not tracked.inode:
                self._learn_inode(tracked)
        held = self.source.socket_inodes(child)
        shared = [tracked for tracked in parent_sockets if tracked.inode and tracked.inode in held]
        if shared:
            self._adopt(child, shared)

    def _adopt(self, pid: int, sockets: list[TrackedSocket]) -> None:
        """`pid` holds these sockets without having called listen() (inherited or passed to it)."""
        process, _outcome = self._ensure_process(pid, self.clock(), "")
        if process is None:
            return
        for tracked in sockets:
            self.registry.add_socket(tracked, pid)
            self.outcomes["inherited"] += 1
            self._emit(
                DiscoveryEvent(
                    event="inherit",
                    pid=pid,
                    tgid=pid,
                    comm=process.info.comm,
                    netns=tracked.netns,
                    ts_ns=self.clock(),
                    port=tracked.port,
                    family=tracked.family,
                    address=tracked.address,
                    inode=tracked.inode,
                )
            )

    def _verify_orphan(self, tracked: TrackedSocket) -> None:
        if not tracked.inode:
            self._learn_inode(tracked)
        live = self.source.listeners_in(tracked.netns)
        if not tracked.inode or live is None or tracked.inode not in {item.inode for item in live}:
            self.registry.remove_socket(tracked)  # it closed (its close event may still be queued)
            return
        holders = self.source.holders_of({tracked.inode}).get(tracked.inode, set())
        for pid in sorted(holders):
            self._adopt(pid, [tracked])
        if not tracked.holders:
            self.outcomes["unattributed"] += 1
            self.registry.remove_socket(tracked)

    def _learn_inode(self, tracked: TrackedSocket) -> None:
        """Find the inode of a socket known only by address (no kernel layout): sock_diag, unique match."""
        live = self.source.listeners_in(tracked.netns) or []
        known = {item.inode for item in self.registry.sockets() if item.inode}
        matches = [
            item
            for item in live
            if item.port == tracked.port
            and item.family == tracked.family
            and item.address == tracked.address
            and item.inode not in known
        ]
        if len(matches) == 1:
            self.registry.rekey_socket(tracked, inode=matches[0].inode)

    def _resolve_port(self, tracked: TrackedSocket, pid: int) -> None:
        """listen() without bind(): the tracepoint fired before the kernel picked the port."""
        live = self.source.listeners_in(tracked.netns) or []
        if tracked.inode:
            found = [item for item in live if item.inode == tracked.inode]
        else:
            held = self.source.socket_inodes(pid)
            known = {item.inode for item in self.registry.sockets() if item.inode}
            found = [
                item
                for item in live
                if item.inode in held and item.inode not in known and item.family == tracked.family
            ]
        if len(found) == 1:
            self.registry.rekey_socket(tracked, port=found[0].port, inode=found[0].inode)

    # ---- snapshots ----

    def load_snapshot(self, taken: Snapshot) -> None:
        """Replace the registry with `taken`; emits one `snapshot` event per listener."""
        infos: dict[int, ProcessInfo | None] = {}
        sockets: list[TrackedSocket] = []
        for item in taken.sockets:
            holders = set()
            for pid in taken.holders.get(item.inode, set()):
                if pid not in infos:
                    info = self.source.inspect(pid)
                    if info is not None and self.exclusion.reason(info, self._name_of(info)) is not None:
                        self._excluded[pid] = info.start_ticks
                        self.outcomes["excluded"] += 1
                        info = None
                    infos[pid] = info
                if infos[pid] is not None:
                    holders.add(pid)
            if not taken.holders.get(item.inode):
                self.outcomes["unattributed"] += 1
            if holders:
                sockets.append(TrackedSocket(item.netns, item.family, item.address, item.port, item.inode, 0, holders))
        kept = {pid: info for pid, info in infos.items() if info is not None}
        previous = self.registry.pids()
        for pid in kept:
            self.watcher.watch(pid)
        for pid in previous - kept.keys():
            self.watcher.unwatch(pid)
        # Watched first, then checked alive: one that exited in between is not kept.
        gone = {pid for pid, info in kept.items() if self.source.start_ticks(pid) != info.start_ticks}
        for pid in gone:
            self.watcher.unwatch(pid)
            del kept[pid]
        for tracked in sockets:
            tracked.holders -= gone
        sockets = [tracked for tracked in sockets if tracked.holders]
        self.registry.replace(((info, taken.taken_ns) for info in kept.values()), sockets)
        self._floor_ns = taken.taken_ns
        self._pending_forks.clear()
        self._due.clear()
        for tracked in sockets:
            for pid in sorted(tracked.holders):
                info = kept[pid]
                named = self._named(pid)
                self.registry.emit(
                    DiscoveryEvent(
                        event="snapshot",
                        pid=pid,
                        tgid=pid,
                        comm=info.comm,
                        netns=tracked.netns,
                        ts_ns=taken.taken_ns,
                        port=tracked.port,
                        family=tracked.family,
                        address=tracked.address,
                        inode=tracked.inode,
                        service=named.get("service", info.service_name),
                        rule=named.get("rule", ""),
                    )
                )
