"""BeylaSupervisor: runs Grafana Beyla as a child process and keeps it healthy.

States: disabled, unsupported (the capability probe says Beyla cannot work here), idle (no
service to instrument yet), starting, running, degraded (running, but something is wrong, e.g.
its process discovery died), backoff (waiting to restart), failed (gave up, with a diagnosis),
stopped (after stop()).

All process work happens on one supervisor thread, which Linux requires anyway: the parent-death
signal is sent when the thread that forked Beyla exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from coral_ebpf.beyla import health, memory, process
from coral_ebpf.beyla.binary import ResolvedBinary, resolve_binary
from coral_ebpf.beyla.diagnosis import WATCHER_FIX, Diagnosis, diagnose_exit, diagnose_line
from coral_ebpf.beyla.dialect import BeylaVersion, Dialect, UnsupportedVersionError, dialect_for
from coral_ebpf.beyla.instance import BeylaInstance
from coral_ebpf.beyla.render import RenderedConfig, RenderTarget, SelfExclusion, render, write_config
from coral_ebpf.beyla.settings import BeylaSettings
from coral_ebpf.beyla.version import VersionDetectionError, detect_version
from coral_ebpf.capabilities.report import ProbeReport, Verdict
from coral_ebpf.discovery.model import ServiceEntry
from coral_ebpf.errors import CoralError

log = logging.getLogger(__name__)

PROBE_COMPONENT = "beyla_application"
STOP_MARGIN = 5.0  # SIGKILL this long after Beyla's own shutdown_timeout
CONFIG_FILE = "beyla.yaml"
PID_FILE = "beyla.pid"
ROLLBACK_KINDS = ("wrong_configuration", "config_unreadable")


class BeylaSupervisor:
    """The Component that runs Beyla. See docs/beyla.md for the states and the status fields."""

    name = "beyla"

    def __init__(
        self,
        settings: BeylaSettings,
        *,
        otlp_endpoint: str,
        probe: ProbeReport | Verdict | None = None,
        services: Sequence[ServiceEntry] = (),
        last_data_seen: Callable[[], float | None] | None = None,
        agent_ports: Sequence[int] = (),
        environ: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self._otlp_endpoint = otlp_endpoint
        self._verdict = probe.verdict(PROBE_COMPONENT) if isinstance(probe, ProbeReport) else probe
        self._last_data_seen = last_data_seen
        self._agent_ports = tuple(agent_ports)
        self._environ = environ
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop_requested = False
        self._stop_timeout = settings.shutdown_timeout + STOP_MARGIN
        # Supervisor-thread state (read by status() under the lock).
        self._state = "stopped"
        self._since = time.time()
        self._history: deque[dict[str, Any]] = deque(maxlen=500)
        self._services: list[ServiceEntry] = list(services)
        self._pending: list[ServiceEntry] | None = None
        self._update_due: float | None = None
        self._instance: BeylaInstance | None = None
        self._binary: ResolvedBinary | None = None
        self._version: BeylaVersion | None = None
        self._dialect: Dialect | None = None
        self._diagnosis: Diagnosis | None = None
        self._config_rejected: dict[str, Any] | None = None
        self._restarts = 0
        self._starts = 0
        self._consecutive_failures = 0
        self._restart_at: float | None = None
        self._running_since: float | None = None
        self._last_exit_code: int | None = None
        self._last_exit_at: float | None = None
        self._last_guard: memory.MemoryGuard | None = None
        self._probe_warning: str | None = None
        self._last_stop: dict[str, Any] | None = None

    # ---------------------------------------------------------------- Component interface

    @property
    def static_attributes(self) -> dict[str, str]:
        """`beyla.attributes`, which the receiver adds to Beyla's data (see coral_ebpf.beyla.attributes)."""
        return dict(self.settings.attributes)

    @property
    def work_dir(self) -> Path:
        return self.settings.work_dir

    @property
    def config_path(self) -> Path:
        return self.work_dir / CONFIG_FILE

    def start(self) -> None:
        """Decide whether Beyla may run, then supervise it on a thread; returns at once."""
        if not self.settings.enabled:
            self._set_state("disabled", reason="beyla.enabled is false")
            return
        verdict = self._verdict
        if verdict is not None and not verdict.ok:
            if not self.settings.force_start:
                self._diagnosis = Diagnosis("unsupported", verdict.reason, verdict.fix, False)
                self._set_state("unsupported", reason=verdict.reason)
                fields = {"source": "beyla", "fix": verdict.fix}
                log.warning("Beyla is not started: %s", verdict.reason, extra={"fields": fields})
                return
            self._probe_warning = f"{verdict.reason} (started anyway: beyla.force_start is true)"
        try:
            self._binary = resolve_binary(self.settings.binary, self._environ)
        except CoralError as exc:
            self._fail(Diagnosis("binary", exc.message, exc.hint, False))
            return
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.work_dir, 0o700)
        self._stop_stale_instance()
        self._stop_requested = False
        self._set_state("starting", reason="supervisor started")
        self._thread = threading.Thread(target=self._run, name="beyla-supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """SIGTERM Beyla's process group, SIGKILL it after Beyla's shutdown_timeout + 5s (within `timeout`)."""
        with self._cond:
            self._stop_requested = True
            self._stop_timeout = max(0.1, min(self.settings.shutdown_timeout + STOP_MARGIN, timeout - 0.5))
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(timeout, 0.1))
        if self._state not in ("disabled", "unsupported", "failed"):
            self._set_state("stopped", reason="stop requested")

    def update_services(self, entries: Sequence[ServiceEntry]) -> None:
        """Discovery changed: re-render and restart Beyla after `beyla.debounce` of quiet."""
        with self._cond:
            self._pending = list(entries)
            self._update_due = time.monotonic() + self.settings.debounce
            self._cond.notify_all()

    # ---------------------------------------------------------------- supervisor thread

    def _run(self) -> None:
        try:
            self._detect_version()
            if self._state != "failed":
                self._launch(self._services)
            while True:
                with self._cond:
                    if self._stop_requested:
                        break
                    self._cond.wait(timeout=self._sleep_time())
                    if self._stop_requested:
                        break
                self._step()
        except Exception as exc:  # a supervisor bug must not leave Beyla unsupervised
            log.exception("Beyla supervisor stopped by an internal error")
            self._fail(Diagnosis("internal", f"supervisor error: {exc}", "please report this with the log", False))
        finally:
            self._stop_instance(self._stop_timeout)
            with contextlib.suppress(OSError):
                (self.work_dir / PID_FILE).unlink()

    def _sleep_time(self) -> float:
        now = time.monotonic()
        deadlines = [now + 1.0]
        for deadline in (self._update_due, self._restart_at):
            if deadline is not None:
                deadlines.append(deadline)
        return max(0.0, min(deadlines) - now)

    def _step(self) -> None:
        now = time.monotonic()
        instance = self._instance
        if instance is not None and instance.exited():
            self._on_exit(instance)
        elif instance is not None:
            self._judge_health(instance, now)
        if self._update_due is not None and now >= self._update_due:
            self._apply_update()
        if self._state == "backoff" and self._restart_at is not None and now >= self._restart_at:
            self._restart_at = None
            self._restarts += 1
            self._launch(self._services)

    def _detect_version(self) -> None:
        assert self._binary is not None
        try:
            info = detect_version(self._binary.real_path, self.work_dir)
            self._version = info.version
        except VersionDetectionError as exc:
            if exc.diagnosis is not None and not exc.diagnosis.retryable:
                self._fail(exc.diagnosis)
                return
            log.warning("Beyla's version is unknown (%s); using the newest config dialect", exc.message)
            self._version = None
        try:
            self._dialect = dialect_for(self._version)
        except UnsupportedVersionError as exc:
            self._fail(Diagnosis("version", str(exc), "install the pinned release: 'coral-ebpf beyla install'", False))

    def _render(self, services: Sequence[ServiceEntry], health_port: int | None) -> RenderedConfig:
        assert self._binary is not None and self._dialect is not None
        exclusion = SelfExclusion.for_this_process(self._agent_ports, self._binary.real_path)
        target = RenderTarget(self._otlp_endpoint, health_port, exclusion)
        return render(self.settings, services, target, self._dialect, self._version)

    def _launch(
        self, services: Sequence[ServiceEntry], trial: bool = False, rollback: list[ServiceEntry] | None = None
    ) -> None:
        """Render for `services` and start Beyla (or go idle when there is nothing to instrument)."""
        assert self._dialect is not None
        health_port = health.free_loopback_port() if self._dialect.health_check else None
        try:
            self._binary = resolve_binary(self.settings.binary, self._environ)
        except CoralError as exc:
            self._fail(Diagnosis("binary", exc.message, exc.hint, False))
            return
        try:
            rendered = self._render(services, health_port)
        except CoralError as exc:
            self._fail(Diagnosis("configuration", exc.message, exc.hint, False))
            return
        self._services = list(services)
        if not rendered.has_targets:
            self._set_state("idle", reason="no service to instrument yet")
            return
        write_config(rendered, self.config_path)
        home = self.work_dir / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        env = process.child_environment(home, self.settings.limits.memory_soft)
        self._starts += 1
        guard = memory.prepare(self.settings.limits.memory_max, instance=str(self._starts))
        self._last_guard = guard
        child = process.spawn(
            self._binary.real_path, ["-config", str(self.config_path)], env, cwd=self.work_dir, guard=guard
        )
        with self._cond:
            self._instance = BeylaInstance(
                child,
                rendered,
                list(services),
                health_port,
                self._cond,
                health_interval=self.settings.health.interval,
                health_timeout=self.settings.health.timeout,
                health_grace=self.settings.health.grace,
                trial_until=time.monotonic() + max(self.settings.health.grace, 1.0) if trial else None,
                rollback=rollback,
            )
        self._running_since = None
        self._write_pid_file(child.pid)
        log.info(
            "Beyla started",
            extra={"fields": {"source": "beyla", "pid": child.pid, "config": str(self.config_path),
                              "services": len(rendered.selectors), "memory_guard": guard.method}},
        )
        self._set_state("starting", pid=child.pid, services=len(rendered.selectors))

    def _judge_health(self, instance: BeylaInstance, now: float) -> None:
        settings = self.settings.health
        age = now - instance.child.started_at
        with self._cond:
            seen = instance.seen
            watcher = seen.watcher_failure
            health_ok_ever = seen.health_ok_ever
            failures = seen.health_failures
            last = seen.last_health
            instrumented = seen.instrumented
        if instance.health_port is not None and failures >= settings.failures and (age >= settings.grace):
            detail = last.detail if last else "no answer"
            self._kill_for_health(instance, f"/healthz failed {failures} times in a row: {detail}")
            return
        if watcher is not None:
            diagnosis = diagnose_line(watcher) or Diagnosis("discovery_dead", watcher.message, WATCHER_FIX, True)
            if self._verdict is not None and not self._verdict.ok:
                diagnosis = Diagnosis(
                    diagnosis.kind, diagnosis.message, f"{diagnosis.fix} (the probe said: {self._verdict.reason})",
                    diagnosis.retryable, diagnosis.line,
                )
            self._mark_up(now)
            if self._state != "degraded" or self._diagnosis != diagnosis:
                self._diagnosis = diagnosis
                self._set_state("degraded", reason=diagnosis.message)
            return
        if instance.health_port is not None:
            healthy = health_ok_ever and failures == 0
            failing = health_ok_ever and failures > 0
            if healthy:
                self._to_running(now, "/healthz ok")
            elif failing and age >= settings.grace and self._state != "degraded":
                self._set_state("degraded", reason=last.detail if last else "/healthz failing")
            return
        data = instance.data_since_start(self._last_data_seen)
        if instrumented or data or age >= settings.grace:
            evidence = "instrumenting" if instrumented else ("data arriving" if data else "alive past the grace time")
            self._to_running(now, evidence)

    def _mark_up(self, now: float) -> None:
        if self._running_since is None:
            self._running_since = now
        elif self._consecutive_failures and now - self._running_since >= self.settings.restart.healthy_reset:
            self._consecutive_failures = 0

    def _to_running(self, now: float, evidence: str) -> None:
        self._mark_up(now)
        if self._state != "running":
            self._diagnosis = None
            self._set_state("running", reason=evidence)

    def _kill_for_health(self, instance: BeylaInstance, why: str) -> None:
        log.error("Beyla is unhealthy; restarting it", extra={"fields": {"source": "beyla", "reason": why}})
        status, killed = instance.stop(self._stop_timeout)
        self._instance = None
        self._record_exit(status)
        self._last_stop = {"at": time.time(), "status": status, "sigkill": killed, "why": "unhealthy"}
        self._after_failure(Diagnosis("unhealthy", why, "see Beyla's log lines before the restart", True))

    def _on_exit(self, instance: BeylaInstance) -> None:
        instance.finish()
        self._instance = None
        guard = instance.child.guard
        status = instance.child.popen.returncode
        self._record_exit(status)
        with self._cond:
            exit_line = instance.exit_line()
        diagnosis = diagnose_exit(
            status,
            exit_line,
            oom_kills=guard.oom_kills(),
            memory_limit=guard.limit if guard.method != "none" else None,
        )
        guard.release()
        log.error(
            "Beyla exited",
            extra={"fields": {"source": "beyla", "status": status, "diagnosis": diagnosis.kind,
                              "detail": diagnosis.message, "fix": diagnosis.fix}},
        )
        within_trial = instance.trial_until is not None and time.monotonic() <= instance.trial_until
        if within_trial and instance.rollback is not None and diagnosis.kind in ROLLBACK_KINDS:
            self._config_rejected = {
                "at": time.time(),
                "by": "beyla",
                "diagnosis": diagnosis.to_dict(),
                "services": len(instance.rendered.selectors),
            }
            log.error(
                "Beyla rejected the new configuration; going back to the previous one",
                extra={"fields": {"source": "beyla", "detail": diagnosis.message}},
            )
            self._set_state("starting", reason="rolled back to the previous configuration")
            self._launch(instance.rollback)
            return
        self._after_failure(diagnosis)

    def _after_failure(self, diagnosis: Diagnosis) -> None:
        self._diagnosis = diagnosis
        self._running_since = None
        if not diagnosis.retryable:
            self._fail(diagnosis)
            return
        self._consecutive_failures += 1
        restart = self.settings.restart
        if self._consecutive_failures > restart.max_restarts:
            self._fail(
                Diagnosis(
                    diagnosis.kind,
                    f"gave up after {restart.max_restarts} restarts in a row; last: {diagnosis.message}",
                    diagnosis.fix,
                    False,
                    diagnosis.line,
                )
            )
            return
        delay = min(restart.backoff_initial * 2 ** (self._consecutive_failures - 1), restart.backoff_max)
        self._restart_at = time.monotonic() + delay
        self._set_state(
            "backoff", reason=diagnosis.message, kind=diagnosis.kind, delay=delay, attempt=self._consecutive_failures
        )

    def _record_exit(self, status: int | None) -> None:
        self._last_exit_code = status
        self._last_exit_at = time.time()

    def _apply_update(self) -> None:
        with self._cond:
            services, self._pending, self._update_due = self._pending, None, None
        if services is None:
            return
        if self._state in ("failed", "disabled", "unsupported"):
            self._services = services
            return
        instance = self._instance
        try:
            candidate = self._render(services, instance.health_port if instance else None)
        except CoralError as exc:
            self._config_rejected = {"at": time.time(), "by": "agent", "diagnosis": {"message": exc.message,
                                                                                      "fix": exc.hint}}
            log.error(
                "new Beyla configuration rejected; Beyla keeps running with the previous one",
                extra={"fields": {"source": "beyla", "detail": exc.message}},
            )
            return
        if instance is None:
            self._services = services
            if self._state == "idle" and candidate.has_targets:
                self._launch(services)
            return
        if _comparable(candidate.document) == _comparable(instance.rendered.document):
            self._services = services
            return
        previous = instance.services
        log.info(
            "services changed; restarting Beyla with the new configuration",
            extra={"fields": {"source": "beyla", "services": len(candidate.selectors)}},
        )
        status, killed = instance.stop(self._stop_timeout)
        self._instance = None
        self._last_stop = {"at": time.time(), "status": status, "sigkill": killed, "why": "services changed"}
        if not candidate.has_targets:
            self._services = services
            self._set_state("idle", reason="no service to instrument any more")
            return
        self._launch(services, trial=True, rollback=previous)

    def _stop_instance(self, timeout: float) -> None:
        instance = self._instance
        if instance is None:
            return
        status, killed = instance.stop(timeout)
        self._instance = None
        self._record_exit(status)
        self._last_stop = {"at": time.time(), "status": status, "sigkill": killed, "why": "agent stop"}
        log.info(
            "Beyla stopped",
            extra={"fields": {"source": "beyla", "status": status, "sigkill": killed}},
        )

    def _fail(self, diagnosis: Diagnosis) -> None:
        self._diagnosis = diagnosis
        self._restart_at = None
        self._set_state("failed", reason=diagnosis.message)
        log.error(
            "Beyla supervision failed: %s", diagnosis.message,
            extra={"fields": {"source": "beyla", "diagnosis": diagnosis.kind, "fix": diagnosis.fix}},
        )

    def _set_state(self, state: str, **detail: Any) -> None:
        with self._cond:
            self._state = state
            self._since = time.time()
            self._history.append({"t": time.monotonic(), "at": self._since, "state": state, **detail})
            self._cond.notify_all()

    # ---------------------------------------------------------------- pid file (a previous agent's Beyla)

    def _write_pid_file(self, pid: int) -> None:
        import psutil

        try:
            found = psutil.Process(pid)
            record = {"pid": pid, "create_time": found.create_time()}
        except psutil.Error:
            return
        path = self.work_dir / PID_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle)

    def _stop_stale_instance(self) -> None:
        """A Beyla left running by an agent that died without stopping it is stopped before a new one starts."""
        import psutil

        path = self.work_dir / PID_FILE
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            stale = psutil.Process(int(record["pid"]))
            # pid + start time name one process for good (exec keeps both); otherwise the pid was reused.
            if abs(stale.create_time() - float(record["create_time"])) > 0.01:
                return
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            return
        log.warning(
            "stopping a Beyla left running by a previous agent",
            extra={"fields": {"source": "beyla", "pid": stale.pid}},
        )
        with contextlib.suppress(OSError, psutil.Error):
            process.signal_group(stale.pid, 15)
            stale.wait(timeout=self.settings.shutdown_timeout + STOP_MARGIN)
        if process.group_alive(stale.pid):
            process.signal_group(stale.pid, 9)
        with contextlib.suppress(OSError):
            path.unlink()

    # ---------------------------------------------------------------- status

    def history(self) -> list[dict[str, Any]]:
        """Recorded state transitions (monotonic `t`, wall `at`, `state`, details such as a back-off `delay`)."""
        with self._cond:
            return list(self._history)

    def status(self) -> dict[str, Any]:
        data_at = self._last_data_seen() if self._last_data_seen else None  # outside our lock: it is another part's
        with self._cond:
            instance = self._instance
            seen = instance.seen if instance else None
            now = time.monotonic()
            last = seen.last_health if seen else None
            health_view: dict[str, Any] = {
                "source": "healthz" if instance and instance.health_port else "logs and data",
                "port": instance.health_port if instance else None,
                "ok": None if last is None else last.ok,
                "detail": None if last is None else last.detail,
                "consecutive_failures": seen.health_failures if seen else 0,
                "instrumented_processes": seen.instrumented if seen else 0,
            }
            result: dict[str, Any] = {
                "state": self._state,
                "since": self._since,
                "restarts": self._restarts,
                "starts": self._starts,
                "consecutive_failures": self._consecutive_failures,
                "last_exit_code": self._last_exit_code,
                "last_exit_at": self._last_exit_at,
                "diagnosis": self._diagnosis.to_dict() if self._diagnosis else None,
                "version": str(self._version) if self._version else None,
                "dialect": self._dialect.name if self._dialect else None,
                "binary": str(self._binary.path) if self._binary else None,
                "binary_source": self._binary.source if self._binary else None,
                "config_path": str(self.config_path),
                "pid": instance.pid if instance else None,
                "rss_bytes": instance.rss_bytes() if instance else None,
                "health": health_view,
                "probe_warning": self._probe_warning,
                "warnings": list(seen.warnings) if seen else [],
                "services": len(instance.rendered.selectors) if instance else 0,
                "pending_update": self._update_due is not None,
                "next_restart_in": None if self._restart_at is None else max(0.0, self._restart_at - now),
                "config_rejected": self._config_rejected,
                "last_stop": self._last_stop,
                "static_attributes": dict(self.settings.attributes),
                "memory_guard": {
                    "gomemlimit": self.settings.limits.memory_soft,
                    **(self._last_guard.describe() if self._last_guard else memory.MemoryGuard.none().describe()),
                },
                "last_data_age": None if data_at is None else max(0.0, time.time() - data_at),
                "recent_lines": list(seen.recent)[-5:] if seen else [],
            }
        return result


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    """The config without what changes on every start (the /healthz port)."""
    return {key: value for key, value in document.items() if key != "health_check"}
