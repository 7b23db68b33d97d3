"""The `Discovery` component: probes + snapshot + registry, driven by one thread.

That thread waits on both probes' buffers, applies each batch of events in kernel-timestamp
order, runs the tracker's deferred checks and publishes changes. One thread keeps the path
from `listen()` to the registry short (no hand-off between threads) and keeps the agent's
CPU low; the kernel buffers absorb bursts while the thread is busy.

Start-up order matters: the probes are attached *before* the snapshot is taken, so whatever
happens while it runs waits in the kernel buffers; the snapshot is then loaded and buffered
events older than it are dropped (it already shows their effect). The same path re-syncs
after the kernel loses events because a buffer was full.
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections import deque
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from coral_ebpf.capabilities.btf import VMLINUX_BTF
from coral_ebpf.capabilities.report import ProbeReport
from coral_ebpf.discovery.events import Intake, ProbeIntake, decode_listen_event, decode_proc_event
from coral_ebpf.discovery.exclusion import Exclusion
from coral_ebpf.discovery.identity import IdentityResolver
from coral_ebpf.discovery.kernel_layout import KernelLayout, read_layout
from coral_ebpf.discovery.mapping import ServiceMapping
from coral_ebpf.discovery.registry import ServiceRegistry
from coral_ebpf.discovery.settings import DiscoverySettings
from coral_ebpf.discovery.snapshot import take_snapshot
from coral_ebpf.discovery.tracker import Tracker
from coral_ebpf.errors import NotRootError
from coral_ebpf.probes.channel import Transport, load_with_fallback
from coral_ebpf.probes.listen_events.loader import ListenEventsProgram
from coral_ebpf.probes.proc_events.loader import ProcEventsProgram
from coral_ebpf.probes.stats import StatsSession

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.2
LOSS_CHECK_INTERVAL_S = 0.1


def ringbuf_available(report: ProbeReport | None) -> bool | None:
    """What the capability probe found about ring buffer maps; None when it did not look."""
    if report is None or "ringbuf" not in report.features:
        return None
    return report.feature("ringbuf")


class Discovery:
    """Live service discovery (Component protocol: start / stop / status)."""

    name = "discovery"

    def __init__(
        self,
        settings: DiscoverySettings,
        state_dir: Path,
        *,
        registry: ServiceRegistry | None = None,
        btf_path: Path | None = VMLINUX_BTF,
        agent_pids: Collection[int] | None = None,
        beyla_paths: Collection[str] = (),
        report_all_processes: bool = False,
        probe_report: ProbeReport | None = None,
        services: Sequence[ServiceMapping] = (),
    ) -> None:
        """`services`: the `services:` config, the user's names for processes (discovery/identity.py)."""
        self.settings = settings
        self.state_dir = state_dir
        self.registry = registry or ServiceRegistry(IdentityResolver(services))
        self._btf_path = btf_path
        self._report_all = report_all_processes
        self._probe_report = probe_report
        self._exclusion = Exclusion(settings.exclude, agent_pids, beyla_paths)
        self._stopping = threading.Event()
        self._paused = threading.Event()
        self._idle = threading.Event()
        self._resync_reasons: list[str] = []
        self._resync_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._proc: ProcEventsProgram | None = None
        self._listen: ListenEventsProgram | None = None
        self._intake: Intake | None = None
        self._stats = StatsSession()
        self._tracker: Tracker | None = None
        self._layout = KernelLayout()
        self._latencies: deque[float] = deque(maxlen=4096)
        self._latency_lock = threading.Lock()
        self.state = "stopped"
        self.since = time.time()
        self.mode: Transport | None = None
        self.ring_buffer_error = ""
        self.overflow = 0  # times a probe's buffer was found to have dropped records
        self.resyncs = 0
        self.last_resync_reason = ""
        self.processing_errors = 0
        self.last_snapshot: dict[str, Any] = {}

    # ---- lifecycle ----

    def start(self) -> None:
        if self.state == "running":
            return
        if not self.settings.enabled:
            self._set_state("disabled")
            return
        if os.geteuid() != 0:
            raise NotRootError(
                "discovery needs root: it loads BPF programs, reads other processes' /proc entries "
                "and enters network namespaces",
                "run the agent (or 'coral-ebpf discover') with sudo",
            )
        self._set_state("starting")
        try:
            self._layout = read_layout(self._btf_path)
            self._load_programs()
            assert self._proc is not None and self._listen is not None
            self._stats.enable()
            self._tracker = Tracker(self.registry, self._exclusion, watcher=self._proc)
            self._proc.report_all_processes(self._report_all)
            self._load_snapshot("start-up")
            self.registry.publish()
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="coral-discovery", daemon=True)
            self._thread.start()
        except BaseException:
            self._teardown(1.0)
            self._set_state("failed")
            raise
        self._set_state("running")
        log.info(
            "discovery running",
            extra={
                "fields": {
                    "event_channel": self.mode,
                    "layout": self._layout.describe(),
                    "services": len(self.registry.snapshot()),
                }
            },
        )

    def _load_programs(self) -> None:
        size = self.settings.event_channel_size
        offsets = self._layout.defines()

        def load(transport: Transport) -> tuple[ProcEventsProgram, ListenEventsProgram]:
            proc = ProcEventsProgram(self.state_dir, transport, size, offsets)
            try:
                return proc, ListenEventsProgram(self.state_dir, transport, size, offsets)
            except BaseException:
                proc.close()
                raise

        (proc, listen), transport, self.ring_buffer_error = load_with_fallback(
            self.settings.event_channel, load, ringbuf_available(self._probe_report)
        )
        self._proc, self._listen, self.mode = proc, listen, transport
        self._intake = Intake(
            [
                ProbeIntake("proc_events", proc.bpf, transport, size, decode_proc_event),
                ProbeIntake("listen_events", listen.bpf, transport, size, decode_listen_event),
            ]
        )

    def stop(self, timeout: float) -> None:
        if self.state in ("stopped", "disabled"):
            return
        self._teardown(timeout)
        self._set_state("stopped")

    def _teardown(self, timeout: float) -> None:
        self._stopping.set()
        self._paused.clear()
        if self._thread is not None:
            self._thread.join(max(timeout, 2 * IDLE_WAIT_S))
            if self._thread.is_alive():
                # Freeing the buffers under a thread still reading them would crash the agent.
                log.warning("discovery thread did not stop in time; leaving its probes to process exit")
                return
            self._thread = None
        if self._intake is not None:
            self._intake.close()
            self._intake = None
        self._close_programs()
        self._stats.disable()

    def _close_programs(self) -> None:
        for program in (self._proc, self._listen):
            if program is not None:
                try:
                    program.close()
                except Exception:
                    log.exception("cannot detach a discovery probe")
        self._proc = None
        self._listen = None

    def _set_state(self, state: str) -> None:
        self.state = state
        self.since = time.time()

    # ---- the discovery thread ----

    def set_exclude(self, patterns: Sequence[str]) -> None:
        """New `discovery.exclude` patterns (a config reload); a resync judges every process again."""
        self._exclusion.patterns = tuple(patterns)
        self.request_resync("discovery.exclude changed")

    def set_services(self, services: Sequence[ServiceMapping]) -> None:
        """New `services:` names (a config reload): every process is named again at the next publish."""
        self.registry.set_resolver(IdentityResolver(services))

    def request_resync(self, reason: str) -> None:
        """Rebuild the registry from a fresh snapshot on the discovery thread, soon."""
        with self._resync_lock:
            self._resync_reasons.append(reason)

    def _check_losses(self) -> None:
        assert self._intake is not None
        for source in self._intake.sources:
            fresh = source.lost_since_last_check()
            if fresh:
                self.overflow += 1
                log.warning("discovery lost kernel events", extra={"fields": {"probe": source.name, "lost": fresh}})
                self.request_resync(f"{fresh} events lost by {source.name}")

    def _run(self) -> None:
        tracker, intake = self._tracker, self._intake
        assert tracker is not None and intake is not None
        next_loss_check = 0.0
        failures = 0
        while not self._stopping.is_set():
            if self._paused.is_set():
                self._idle.set()
                self._stopping.wait(0.05)
                continue
            self._idle.clear()
            due = tracker.next_due_ns()
            wait = IDLE_WAIT_S if due is None else min(IDLE_WAIT_S, max(0.0, (due - time.monotonic_ns()) / 1e9))
            try:
                batch = intake.poll(wait)
                if time.monotonic() >= next_loss_check:
                    next_loss_check = time.monotonic() + LOSS_CHECK_INTERVAL_S
                    self._check_losses()
                with self._resync_lock:
                    reasons, self._resync_reasons = self._resync_reasons, []
                if reasons:
                    self._load_snapshot("; ".join(reasons))  # events in `batch` older than it are dropped
                applied = []
                for event in batch:
                    tracker.handle(event)
                    applied.append((time.monotonic_ns() - event.ts_ns) / 1e6)
                with self._latency_lock:
                    self._latencies.extend(applied)
                tracker.run_due()
                self.registry.publish()
                failures = 0
            except Exception:
                self.processing_errors += 1
                failures += 1
                log.exception("discovery could not apply events; re-syncing")
                self.request_resync("processing error")
                self._stopping.wait(min(5.0, 0.1 * 2 ** min(failures, 6)))  # do not spin on a lasting fault

    def _load_snapshot(self, reason: str) -> None:
        assert self._tracker is not None
        taken = take_snapshot()
        self._tracker.load_snapshot(taken)
        if reason != "start-up":
            self.resyncs += 1
            self.last_resync_reason = reason
            log.info("discovery re-synced", extra={"fields": {"reason": reason}})
        self.last_snapshot = {
            "reason": reason,
            "at": time.time(),
            "duration_ms": round(taken.duration_s * 1000, 1),
            "namespaces": taken.namespaces,
            "listeners": len(taken.sockets),
            "errors": taken.errors[:5],
        }
        if taken.errors:
            log.warning("snapshot could not read some namespaces", extra={"fields": {"errors": taken.errors[:5]}})

    # ---- test hooks ----

    def pause_readers(self, timeout: float = 2.0) -> bool:
        """Stop reading the probes' buffers (the kernel then drops what does not fit). For tests.

        Returns True once the discovery thread is idle.
        """
        self._idle.clear()
        self._paused.set()
        return self._idle.wait(timeout)

    def resume_readers(self) -> None:
        self._paused.clear()

    # ---- status ----

    def status(self) -> dict[str, Any]:
        tracker = self._tracker
        sources = self._intake.sources if self._intake is not None else []
        entries = self.registry.snapshot()
        with self._latency_lock:
            latencies = sorted(self._latencies)
        status: dict[str, Any] = {
            "state": self.state,
            "since": self.since,
            "buffer": self.mode,  # the event channel's transport
            "event_channel_size": self.settings.event_channel_size,
            "kernel_layout": self._layout.describe(),
            "services": len(entries),
            "listeners": sum(len(entry.listeners) for entry in entries),
            "events": dict(tracker.counts) if tracker else {},
            "outcomes": dict(tracker.outcomes) if tracker else {},
            "lost": {source.name: source.lost for source in sources},
            "perf_lost_records": {source.name: source.perf_lost_records for source in sources},
            "decode_errors": sum(source.decode_errors for source in sources),
            "overflow": self.overflow,
            "resyncs": self.resyncs,
            "last_resync_reason": self.last_resync_reason,
            "processing_errors": self.processing_errors,
            "snapshot": self.last_snapshot,
            "bpf_stats": self._stats.mode,
            "probes": {},
        }
        if self.ring_buffer_error:
            status["ring_buffer_error"] = self.ring_buffer_error
        if latencies:
            status["apply_latency_ms"] = {
                "p50": round(statistics.median(latencies), 3),
                "p99": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3),
            }
        for program in (self._proc, self._listen):
            if program is not None:
                status["probes"].update(program.run_stats())
        return status
