"""What the supervisor knows about Beyla, and the JSON `status()` shows of it (docs/beyla.md lists the fields)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from coral_ebpf.beyla import memory
from coral_ebpf.beyla.binary import ResolvedBinary
from coral_ebpf.beyla.diagnosis import Diagnosis
from coral_ebpf.beyla.dialect import BeylaVersion, Dialect
from coral_ebpf.beyla.instance import BeylaInstance
from coral_ebpf.beyla.settings import BeylaSettings
from coral_ebpf.state import PartState


@dataclass
class SupervisorRecord:
    """Written by the supervisor thread (transitions under the supervisor's lock), read by status()."""

    state: PartState = PartState.STOPPED
    since: float = field(default_factory=time.time)
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=500))
    restarts: int = 0  # restarts after a failure (a planned restart for new services is not one)
    starts: int = 0
    diagnosis: Diagnosis | None = None
    binary: ResolvedBinary | None = None
    version: BeylaVersion | None = None
    dialect: Dialect | None = None
    probe_warning: str | None = None
    config_rejected: dict[str, Any] | None = None
    last_exit_code: int | None = None
    last_exit_at: float | None = None
    last_stop: dict[str, Any] | None = None
    last_guard: memory.MemoryGuard | None = None
    waiting_for: str | None = None  # while `starting`: what it waits for

    def transition(self, state: PartState, detail: dict[str, Any]) -> None:
        self.state = state
        self.since = time.time()
        self.history.append({"t": time.monotonic(), "at": self.since, "state": state, **detail})

    def exited(self, status: int | None) -> None:
        self.last_exit_code = status
        self.last_exit_at = time.time()

    def stopped(self, status: int | None, sigkill: bool, why: str) -> None:
        self.last_stop = {"at": time.time(), "status": status, "sigkill": sigkill, "why": why}


def build(
    record: SupervisorRecord,
    instance: BeylaInstance | None,
    settings: BeylaSettings,
    *,
    config_path: str,
    consecutive_failures: int,
    pending_update: bool,
    restart_at: float | None,
    data_at: float | None,
) -> dict[str, Any]:
    seen = instance.seen if instance else None
    last = seen.last_health if seen else None
    guard = record.last_guard or memory.MemoryGuard.none()
    instrumented = instance.instrumented_pids() if instance else set()
    return {
        "state": record.state,
        "since": record.since,
        "waiting_for": record.waiting_for if record.state == "starting" else None,
        "restarts": record.restarts,
        "starts": record.starts,
        "consecutive_failures": consecutive_failures,
        "last_exit_code": record.last_exit_code,
        "last_exit_at": record.last_exit_at,
        "diagnosis": record.diagnosis.to_dict() if record.diagnosis else None,
        "version": str(record.version) if record.version else None,
        "dialect": record.dialect.name if record.dialect else None,
        "binary": str(record.binary.path) if record.binary else None,
        "binary_source": record.binary.source if record.binary else None,
        "config_path": config_path,
        "pid": instance.pid if instance else None,
        "rss_bytes": instance.rss_bytes() if instance else None,
        "health": {
            "source": "healthz" if instance and instance.health_port else "logs and data",
            "port": instance.health_port if instance else None,
            "ok": None if last is None else last.ok,
            "detail": None if last is None else last.detail,
            "consecutive_failures": seen.health_failures if seen else 0,
            "instrumented_processes": len(instrumented),
            "instrumented_pids": sorted(instrumented),
            "tracer_live": seen.tracer_live if seen else False,
        },
        "probe_warning": record.probe_warning,
        "warnings": list(seen.warnings) if seen else [],
        "services": len(instance.rendered.selectors) if instance else 0,
        "skipped_services": [
            {"pid": skipped.pid, "name": skipped.name, "reason": skipped.reason}
            for skipped in (instance.rendered.skipped if instance else ())
        ],
        "pending_update": pending_update,
        "next_restart_in": None if restart_at is None else max(0.0, restart_at - time.monotonic()),
        "config_rejected": record.config_rejected,
        "last_stop": record.last_stop,
        "static_attributes": dict(settings.attributes),
        "memory_guard": {"gomemlimit": settings.limits.memory_soft, **guard.describe()},
        "last_data_age": None if data_at is None else max(0.0, time.time() - data_at),
        "recent_lines": list(seen.recent)[-5:] if seen else [],
    }
