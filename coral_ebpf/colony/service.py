"""The running colony (`coral-ebpf colony start`): store, poller, cleanup and the control socket.

`colony status` and `query --colony` reach it over its control socket (the same server as the
agent's), because the colony holds its DuckDB file open for writing.

Operator telemetry (`/metrics`, `/-/healthy`, `/-/ready`) is served by the agent's listener
(`telemetry.server.OperatorServer`) over `ColonyTelemetry`, which reads `status()` (and so
`metrics()`); `telemetry.endpoint` (default 127.0.0.1:9465, empty disables it) sets where.
With `ui.enabled` (the default) the same listener serves the web view under `/ui/` over a
`ColonyBackend` (the fleet executor and `status()`), behind its TLS and token.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from coral_ebpf import __version__
from coral_ebpf.agent.control import ControlServer
from coral_ebpf.agent.lifecycle import StopSignal, prepare_state_dir
from coral_ebpf.colony.backend import ColonyBackend
from coral_ebpf.colony.poller import Poller
from coral_ebpf.colony.queries import fleet_executor
from coral_ebpf.colony.settings import DEFAULT_COLONY_TELEMETRY_ENDPOINT, ColonyConfig
from coral_ebpf.colony.store import ColonyStore, status_document
from coral_ebpf.colony.telemetry_source import ColonyTelemetry
from coral_ebpf.errors import CoralError
from coral_ebpf.state import PartState
from coral_ebpf.storage.umask import PrivateUmask
from coral_ebpf.telemetry.server import OperatorServer
from coral_ebpf.ui.app import build_ui_app
from coral_ebpf.ui.settings import UI_PREFIX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Document:
    """The colony's status for the control socket (which asks any document for `to_json()`)."""

    document: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return self.document


class Colony:
    def __init__(self, config: ColonyConfig) -> None:
        self.config = config
        self.started = time.time()
        self.store: ColonyStore | None = None
        self.poller: Poller | None = None
        self._control: ControlServer | None = None
        self._telemetry: OperatorServer | None = None
        self._telemetry_state: dict[str, Any] = {"state": PartState.DISABLED, "reason": "telemetry.endpoint is empty"}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_cleanup = 0.0
        self._deleted: dict[str, int] = {}

    def start(self) -> None:
        prepare_state_dir(self.config.state_dir)
        self.store = ColonyStore(self.config.database)
        self.poller = Poller(self.config, self.store)
        self._execute = fleet_executor(self.store.cursor)
        self._control = ControlServer(self.config.control_socket, lambda: _Document(self.status()), self._execute)
        self._control.start()
        self._thread = threading.Thread(target=self._loop, name="colony-poller", daemon=True)
        self._thread.start()
        self._start_telemetry()
        log.info(
            "colony started",
            extra={
                "fields": {
                    "version": __version__,
                    "config": self.config.source,
                    "agents": len(self.poller.targets()),
                    "database": str(self.config.database),
                }
            },
        )

    def _start_telemetry(self) -> None:
        settings = self.config.telemetry
        if settings.endpoint is None:
            return
        mounts = {}
        if self.config.ui.enabled:  # the web view over every agent, behind the listener's TLS and token
            mounts[UI_PREFIX] = build_ui_app(ColonyBackend(self._execute, self.status))
        server = OperatorServer(settings, ColonyTelemetry(self.status), name="colony-telemetry", mounts=mounts)
        try:
            server.start()
        except CoralError as exc:
            if settings.endpoint != DEFAULT_COLONY_TELEMETRY_ENDPOINT:
                raise  # an endpoint the operator chose and we cannot serve is a start error
            # The default port taken: the colony still polls and stores; status says why there is no /metrics.
            self._telemetry_state = {"state": PartState.FAILED, "reason": exc.message}
            log.warning("operator listener not started", extra={"fields": {"error": exc.message}})
            return
        self._telemetry = server

    def _loop(self) -> None:
        interval = self.config.poll.interval
        next_cycle = time.monotonic()
        while not self._stop.is_set():
            try:
                self._cycle()
            except Exception:  # the colony keeps polling; the next cycle may succeed
                log.exception("poll cycle failed")
            next_cycle += interval
            self._stop.wait(max(0.0, next_cycle - time.monotonic()))
            next_cycle = max(next_cycle, time.monotonic() - interval)  # never try to catch up a backlog of cycles

    def _cycle(self) -> None:
        assert self.poller is not None and self.store is not None
        self.poller.refresh_agents()
        results = self.poller.cycle()
        failed = [r.agent_id for r in results if not r.ok]
        log.info(
            "poll cycle",
            extra={
                "fields": {
                    "agents": len(results),
                    "failed": len(failed),
                    "rows": sum(r.rows for r in results),
                    "seconds": round(self.poller.counters.last_cycle_seconds, 3),
                }
            },
        )
        if time.monotonic() - self._last_cleanup >= self.config.cleanup_interval:
            self._deleted = self.store.delete_expired(self.config.retention)
            if self.config.downsample_resolution is not None:
                merged = self.store.downsample(self.config.downsample_after, self.config.downsample_resolution)
                log.info("downsampled", extra={"fields": {k: f"{r}->{w}" for k, (r, w) in merged.items()}})
            self._last_cleanup = time.monotonic()

    def stop(self, timeout: float = 30.0) -> None:
        if self._telemetry is not None:
            self._telemetry.stop(5.0)
            self._telemetry = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._control is not None:
            self._control.stop(5.0)
        if self.poller is not None:
            self.poller.close()
        if self.store is not None:
            self.store.close()
        log.info("colony stopped")

    def run(self, stop: StopSignal) -> None:
        umask = PrivateUmask()  # DuckDB re-creates its WAL at every checkpoint: keep it 0600
        umask.acquire()
        try:
            try:
                self.start()
            except BaseException:
                self.stop()
                raise
            stop.wait()
            log.info("stop requested", extra={"fields": {"signal": stop.received}})
            self.stop()
        finally:
            umask.release()

    def status(self) -> dict[str, Any]:
        assert self.store is not None and self.poller is not None
        cursor = self.store.cursor()
        try:
            document = status_document(cursor, self.config.database)
        finally:
            cursor.close()
        document["colony"] = {
            "version": __version__,
            "pid": os.getpid(),
            "polling": self._thread is not None and self._thread.is_alive() and not self._stop.is_set(),
            "started": self.started,
            "config": self.config.source,
            "poll_interval_s": self.config.poll.interval,
            "concurrency": self.config.poll.concurrency,
            "agents_configured": [t.id for t in self.poller.targets()],
            "agent_file_problems": list(self.poller.problems),
            "deleted_by_retention": self._deleted,
        }
        document["metrics"] = self.metrics()
        document["telemetry"] = self._telemetry.status() if self._telemetry is not None else dict(self._telemetry_state)
        return document

    def metrics(self) -> dict[str, Any]:
        """Counters for the operator telemetry listener (/metrics)."""
        assert self.poller is not None
        counters = self.poller.counters
        return {
            "poll_cycles_total": counters.cycles,
            "poll_cycle_seconds": counters.last_cycle_seconds,
            "rows_stored_total": counters.rows_stored,
            "rows_received_total": dict(counters.by_kind),
            "polls_failed_total": counters.polls_failed,
            "gaps_found_total": counters.gaps_found,
        }
