"""BeylaSupervisor: runs Grafana Beyla as a child process and keeps it healthy.

States (`PartState`): disabled, unsupported (the capability probe says Beyla cannot work here), idle (no
service to instrument yet), starting, running, degraded (running, but something is wrong, e.g.
its process discovery died), backoff (waiting to restart), failed (gave up, with a diagnosis),
stopped (after stop()). Each change is also told to the listeners given to `subscribe()` (the RED
arbiter falls back to the built-in engine on `failed`), so nobody needs to poll status().

All process work happens on one supervisor thread, which Linux requires anyway: the parent-death
signal is sent when the thread that forked Beyla exits.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from coral_ebpf.beyla import health, kill_cause, memory, pidfile, process, status_view
from coral_ebpf.beyla.binary import resolve_binary
from coral_ebpf.beyla.diagnosis import Diagnosis, diagnose_exit
from coral_ebpf.beyla.dialect import BeylaVersion, UnsupportedVersionError, dialect_for
from coral_ebpf.beyla.health_policy import WAITING_FOR_TRACER, assess
from coral_ebpf.beyla.instance import BeylaInstance
from coral_ebpf.beyla.render import RenderedConfig, RenderTarget, SelfExclusion, render, write_config
from coral_ebpf.beyla.restart_policy import RestartPolicy
from coral_ebpf.beyla.settings import BeylaSettings
from coral_ebpf.beyla.status_view import SupervisorRecord
from coral_ebpf.beyla.version import VersionDetectionError, binary_identity, detect_version
from coral_ebpf.capabilities.report import ProbeComponent, ProbeReport, Verdict
from coral_ebpf.discovery.model import ServiceEntry
from coral_ebpf.discovery.registry import service_fields
from coral_ebpf.errors import CoralError
from coral_ebpf.safe_paths import prepare_private_dir
from coral_ebpf.state import PartState, StateChange, StateListener

log = logging.getLogger(__name__)

PROBE_COMPONENT = ProbeComponent.BEYLA_APPLICATION
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
        self._record = SupervisorRecord()
        self._services: list[ServiceEntry] = list(services)
        self._traced: set[tuple[int, float, str]] = set()  # (pid, start, name) announced as traced by Beyla
        self._pending: list[ServiceEntry] | None = None
        self._update_due: float | None = None
        self._instance: BeylaInstance | None = None
        self._rejected_document: dict[str, Any] | None = None
        self._policy = RestartPolicy(settings.restart)
        self._restart_at: float | None = None
        self._listeners: list[StateListener] = []
        self._undetected: tuple[str, int, int, int] | None = None  # identity of a binary whose version is unknown

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
        if self._thread is not None and self._thread.is_alive():
            return
        if not self.settings.enabled:
            self._set_state(PartState.DISABLED, reason="beyla.enabled is false")
            return
        verdict = self._verdict
        if verdict is not None and not verdict.ok:
            if not self.settings.force_start:
                self._record.diagnosis = Diagnosis("unsupported", verdict.reason, verdict.fix, False)
                self._set_state(PartState.UNSUPPORTED, reason=verdict.reason)
                fields = {"source": "beyla", "fix": verdict.fix}
                log.warning("Beyla is not started: %s", verdict.reason, extra={"fields": fields})
                return
            self._record.probe_warning = f"{verdict.reason} (started anyway: beyla.force_start is true)"
        try:
            self._record.binary = resolve_binary(self.settings.binary, self._environ)
        except CoralError as exc:
            self._fail(Diagnosis("binary", exc.message, exc.hint, False))
            return
        try:
            prepare_private_dir(self.work_dir, "Beyla work directory")
        except CoralError as exc:
            self._fail(Diagnosis("configuration", exc.message, exc.hint, False))
            return
        pidfile.stop_stale(self.work_dir / PID_FILE, self.settings.shutdown_timeout + STOP_MARGIN)
        self._stop_requested = False
        self._record.waiting_for = "detecting Beyla's version"
        self._set_state(PartState.STARTING, reason="supervisor started")
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
        if self._record.state not in (PartState.DISABLED, PartState.UNSUPPORTED, PartState.FAILED):
            self._set_state(PartState.STOPPED, reason="stop requested")

    def update_settings(self, settings: BeylaSettings) -> None:
        """New `beyla.*` settings (a config reload): Beyla's config is rendered again at once and
        Beyla restarted with it if it differs. `enabled`, `binary` and `attributes` need an agent restart."""
        with self._cond:
            self.settings = settings
            self._stop_timeout = settings.shutdown_timeout + STOP_MARGIN
            self._policy = RestartPolicy(settings.restart)
            if self._pending is None:
                self._pending = list(self._services)
            self._update_due = time.monotonic()
            self._cond.notify_all()

    def update_services(self, entries: Sequence[ServiceEntry]) -> None:
        """Discovery changed: re-render and restart Beyla after `beyla.debounce` of quiet."""
        with self._cond:
            self._pending = list(entries)
            self._update_due = time.monotonic() + self.settings.debounce
            self._cond.notify_all()

    # ---------------------------------------------------------------- supervisor thread

    def _run(self) -> None:
        try:
            self._detect_version(first=True)
            if self._record.state != PartState.FAILED and not self._stop_requested:
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
        if self._record.state == PartState.BACKOFF and self._restart_at is not None and now >= self._restart_at:
            self._restart_at = None
            self._record.restarts += 1
            # Out of `backoff` before the launch's work (a version probe can take seconds), so status
            # never shows `backoff` without a `next_restart_in`.
            self._set_state(PartState.STARTING, reason=f"restart {self._record.restarts} after back-off")
            self._launch(self._services)

    def _detect_version(self, first: bool) -> None:
        """The first detection decides; later ones (a binary replaced while the agent runs, e.g. by
        `coral-ebpf beyla install`) are cached probes that only update the version when they succeed.
        A binary that is not Beyla fails at any detection; one whose detection failed otherwise is not
        probed again (a 20 s probe on every restart) until the file changes."""
        assert self._record.binary is not None
        path = self._record.binary.real_path
        try:
            identity = binary_identity(path)
        except OSError:
            identity = None
        if not first and identity is not None and identity == self._undetected:
            return
        try:
            version: BeylaVersion | None = detect_version(path, self.work_dir).version
        except VersionDetectionError as exc:
            if exc.diagnosis is not None and exc.diagnosis.kind == "not_beyla":
                self._fail(exc.diagnosis)
                return
            self._undetected = identity
            if not first:
                return
            if exc.diagnosis is not None and not exc.diagnosis.retryable:
                self._fail(exc.diagnosis)
                return
            log.warning("Beyla's version is unknown (%s); using the newest config dialect", exc.message)
            version = None
        try:
            dialect = dialect_for(version)
        except UnsupportedVersionError as exc:
            if first:
                self._fail(
                    Diagnosis("version", str(exc), "install the pinned release: 'coral-ebpf beyla install'", False)
                )
            return
        if not first and version != self._record.version:
            log.info("Beyla's version changed", extra={"fields": {"source": "beyla", "version": str(version)}})
        self._record.version, self._record.dialect = version, dialect

    def _render(self, services: Sequence[ServiceEntry], health_port: int | None) -> RenderedConfig:
        assert self._record.binary is not None and self._record.dialect is not None
        exclusion = SelfExclusion.for_this_process(self._agent_ports, self._record.binary.real_path)
        # Beyla's service.instance.id then matches discovery's and the built-in engine's (`<host>:<pid>`).
        target = RenderTarget(self._otlp_endpoint, health_port, exclusion, hostname=socket.gethostname())
        return render(self.settings, services, target, self._record.dialect, self._record.version)

    def _launch(
        self, services: Sequence[ServiceEntry], trial: bool = False, rollback: list[ServiceEntry] | None = None
    ) -> None:
        """Render for `services` and start Beyla (or go idle when there is nothing to instrument)."""
        try:
            self._record.binary = resolve_binary(self.settings.binary, self._environ)
        except CoralError as exc:
            self._fail(Diagnosis("binary", exc.message, exc.hint, False))
            return
        self._detect_version(first=False)
        if self._record.state == PartState.FAILED:
            return
        assert self._record.dialect is not None
        health_port = health.free_loopback_port() if self._record.dialect.health_check else None
        try:
            rendered = self._render(services, health_port)
        except CoralError as exc:
            self._fail(Diagnosis("configuration", exc.message, exc.hint, False))
            return
        self._services = list(services)
        if not rendered.has_targets:
            self._set_state(PartState.IDLE, reason="no service to instrument yet")
            return
        write_config(rendered, self.config_path)
        home = self.work_dir / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        env = process.child_environment(home, self.settings.limits.memory_soft)
        self._record.starts += 1
        guard = memory.prepare(self.settings.limits.memory_max, instance=str(self._record.starts))
        self._record.last_guard = guard
        try:
            child = process.spawn(
                self._record.binary.real_path, ["-config", str(self.config_path)], env, cwd=self.work_dir, guard=guard
            )
        except OSError as exc:
            guard.release()
            self._after_failure(Diagnosis("start_failed", f"cannot start Beyla: {exc}", "", True))
            return
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
        self._policy.started()
        pidfile.write(self.work_dir / PID_FILE, child.pid)
        log.info(
            "Beyla started",
            extra={
                "fields": {
                    "source": "beyla",
                    "pid": child.pid,
                    "config": str(self.config_path),
                    "services": len(rendered.selectors),
                    "memory_guard": guard.method,
                }
            },
        )
        self._announce_traced(services, rendered)
        with self._cond:
            self._record.waiting_for = "waiting for /healthz" if health_port else WAITING_FOR_TRACER
        self._set_state(PartState.STARTING, pid=child.pid, services=len(rendered.selectors))

    def _announce_traced(self, services: Sequence[ServiceEntry], rendered: RenderedConfig) -> None:
        """One info line per service Beyla was newly given to instrument."""
        skipped = {item.pid for item in rendered.skipped}
        traced = {(entry.pid, entry.start_time, entry.name): entry for entry in services if entry.pid not in skipped}
        for key, entry in traced.items():
            if key not in self._traced:
                log.info("service traced", extra={"fields": {"engine": "beyla", **service_fields(entry)}})
        self._traced = set(traced)

    def _judge_health(self, instance: BeylaInstance, now: float) -> None:
        data = instance.data_since_start(self._last_data_seen)
        with self._cond:
            assessment = assess(
                instance.seen,
                age=now - instance.child.started_at,
                has_healthz=instance.health_port is not None,
                health=self.settings.health,
                data_arrived=data,
                probe=self._verdict,
            )
        if assessment.verdict == "restart":
            self._kill_for_health(instance, assessment.reason)
            return
        if assessment.healthy:
            self._policy.healthy(now)
        record = self._record
        if assessment.verdict == "starting" and record.state == PartState.STARTING:
            with self._cond:
                record.waiting_for = assessment.reason
        if assessment.verdict == "running" and record.state != PartState.RUNNING:
            record.diagnosis = None
            self._set_state(PartState.RUNNING, reason=assessment.reason)
        elif assessment.verdict == "degraded" and (record.state, record.diagnosis) != (
            PartState.DEGRADED,
            assessment.diagnosis,
        ):
            record.diagnosis = assessment.diagnosis
            self._set_state(PartState.DEGRADED, reason=assessment.reason)

    def _kill_for_health(self, instance: BeylaInstance, why: str) -> None:
        log.error("Beyla is unhealthy; restarting it", extra={"fields": {"source": "beyla", "reason": why}})
        status, killed = instance.stop(self._stop_timeout)
        self._instance = None
        self._record.exited(status)
        self._record.stopped(status, killed, "unhealthy")
        self._after_failure(Diagnosis("unhealthy", why, "see Beyla's log lines before the restart", True))

    def _on_exit(self, instance: BeylaInstance) -> None:
        instance.finish()
        self._instance = None
        guard = instance.child.guard
        status = instance.child.popen.returncode
        self._record.exited(status)
        with self._cond:
            exit_line = instance.exit_line()
        kill = kill_cause.gather(instance.child.pid, guard.oom_kills()) if status == -signal.SIGKILL else None
        diagnosis = diagnose_exit(
            status,
            exit_line,
            memory_limit=guard.limit if guard.method != "none" else None,
            kill=kill,
        )
        guard.release()
        log.error(
            "Beyla exited",
            extra={
                "fields": {
                    "source": "beyla",
                    "status": status,
                    "diagnosis": diagnosis.kind,
                    "detail": diagnosis.message,
                    "fix": diagnosis.fix,
                }
            },
        )
        within_trial = instance.trial_until is not None and time.monotonic() <= instance.trial_until
        if within_trial and instance.rollback is not None and diagnosis.kind in ROLLBACK_KINDS:
            self._rejected_document = _comparable(instance.rendered.document)
            self._record.config_rejected = {
                "at": time.time(),
                "by": "beyla",
                "diagnosis": diagnosis.to_dict(),
                "services": len(instance.rendered.selectors),
            }
            log.error(
                "Beyla rejected the new configuration; going back to the previous one",
                extra={"fields": {"source": "beyla", "detail": diagnosis.message}},
            )
            self._set_state(PartState.STARTING, reason="rolled back to the previous configuration")
            self._launch(instance.rollback)
            return
        self._after_failure(diagnosis)

    def _after_failure(self, diagnosis: Diagnosis) -> None:
        self._record.diagnosis = diagnosis
        decision = self._policy.failed(diagnosis)
        if decision.action == "fail":
            assert decision.diagnosis is not None
            self._fail(decision.diagnosis)
            return
        self._restart_at = time.monotonic() + decision.delay
        attempt = self._policy.consecutive_failures
        self._set_state(
            PartState.BACKOFF, reason=diagnosis.message, kind=diagnosis.kind, delay=decision.delay, attempt=attempt
        )

    def _apply_update(self) -> None:
        with self._cond:
            services, self._pending, self._update_due = self._pending, None, None
        if services is None:
            return
        if self._record.state in (PartState.FAILED, PartState.DISABLED, PartState.UNSUPPORTED):
            self._services = services
            return
        instance = self._instance
        try:
            candidate = self._render(services, instance.health_port if instance else None)
        except CoralError as exc:
            self._record.config_rejected = {
                "at": time.time(),
                "by": "agent",
                "diagnosis": {"message": exc.message, "fix": exc.hint},
            }
            log.error(
                "new Beyla configuration rejected; Beyla keeps running with the previous one",
                extra={"fields": {"source": "beyla", "detail": exc.message}},
            )
            return
        if instance is None:
            self._services = services
            if self._record.state == PartState.IDLE and candidate.has_targets:
                self._launch(services)
            return
        if _comparable(candidate.document) == _comparable(instance.rendered.document):
            self._services = services
            return
        if _comparable(candidate.document) == self._rejected_document:
            log.info(
                "not retrying a configuration Beyla already rejected",
                extra={"fields": {"source": "beyla", "services": len(candidate.selectors)}},
            )
            return
        previous = instance.services
        log.info(
            "services changed; restarting Beyla with the new configuration",
            extra={"fields": {"source": "beyla", "services": len(candidate.selectors)}},
        )
        status, killed = instance.stop(self._stop_timeout)
        self._instance = None
        self._record.stopped(status, killed, "services changed")
        if not candidate.has_targets:
            self._services = services
            self._set_state(PartState.IDLE, reason="no service to instrument any more")
            return
        self._launch(services, trial=True, rollback=previous)

    def _stop_instance(self, timeout: float) -> None:
        instance = self._instance
        if instance is None:
            return
        status, killed = instance.stop(timeout)
        self._instance = None
        self._record.exited(status)
        self._record.stopped(status, killed, "agent stop")
        log.info(
            "Beyla stopped",
            extra={"fields": {"source": "beyla", "status": status, "sigkill": killed}},
        )

    def _fail(self, diagnosis: Diagnosis) -> None:
        self._record.diagnosis = diagnosis
        self._restart_at = None
        self._set_state(PartState.FAILED, reason=diagnosis.message)
        log.error(
            "Beyla supervision failed: %s",
            diagnosis.message,
            extra={"fields": {"source": "beyla", "diagnosis": diagnosis.kind, "fix": diagnosis.fix}},
        )

    def subscribe(self, listener: StateListener) -> None:
        """Call `listener` with every state change from now on (on the thread that made it, outside the
        supervisor's lock, so it may read status(); it must return quickly and not raise)."""
        with self._cond:
            self._listeners.append(listener)

    def _set_state(self, state: PartState, **detail: Any) -> None:
        with self._cond:
            self._record.transition(state, detail)
            self._cond.notify_all()
            listeners = list(self._listeners)
        change = StateChange(self.name, state, str(detail.get("reason", "")))
        for listener in listeners:
            try:
                listener(change)
            except Exception:  # an observer's bug must not stop the supervision of Beyla
                log.exception("a Beyla state listener failed", extra={"fields": {"state": str(state)}})

    # ---------------------------------------------------------------- status

    def history(self) -> list[dict[str, Any]]:
        """Recorded state transitions (monotonic `t`, wall `at`, `state`, details such as a back-off `delay`)."""
        with self._cond:
            return list(self._record.history)

    def status(self) -> dict[str, Any]:
        data_at = self._last_data_seen() if self._last_data_seen else None  # outside our lock: it is another part's
        with self._cond:
            return status_view.build(
                self._record,
                self._instance,
                self.settings,
                config_path=str(self.config_path),
                consecutive_failures=self._policy.consecutive_failures,
                pending_update=self._update_due is not None,
                restart_at=self._restart_at,
                data_at=data_at,
            )


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    """The config without what changes on every start (the /healthz port)."""
    return {key: value for key, value in document.items() if key != "health_check"}
