"""The agent: wires the parts together and owns start and stop.

The control socket starts first, so `status` answers from the first second (`agent.state`
`starting`, each part `pending`, `starting` or settled; queries wait for the database). The
rest follows the data: probe → storage → transform → OTLP receiver → discovery → RED engine
(Beyla supervisor or the built-in BCC probe). Stop runs in reverse (the control socket first),
so every part that feeds another stops before the part it feeds, and data already accepted is
written before the database closes.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from coral_ebpf import __version__
from coral_ebpf.agent.component import Component
from coral_ebpf.agent.control import ControlServer, check_control_socket_free
from coral_ebpf.agent.lifecycle import ComponentSlot, StopSignal, prepare_state_dir
from coral_ebpf.agent.static_attributes import StaticAttributesConsumer
from coral_ebpf.beyla.binary import resolve_binary
from coral_ebpf.beyla.settings import beyla_only_keys_set
from coral_ebpf.beyla.supervisor import BeylaSupervisor
from coral_ebpf.beyla.target import agent_ports, otlp_endpoint_url
from coral_ebpf.capabilities.report import ProbeReport, Verdict
from coral_ebpf.config import AgentConfig
from coral_ebpf.consumer import Consumer
from coral_ebpf.discovery.model import ServiceEntry
from coral_ebpf.errors import ConfigError, CoralError
from coral_ebpf.otlp.receiver import OtlpReceiver
from coral_ebpf.otlp.settings import OtlpSettings
from coral_ebpf.query.dispatch import query_executor
from coral_ebpf.red.engine import RedEngine
from coral_ebpf.red.selection import choose_engine
from coral_ebpf.storage.writer import Storage
from coral_ebpf.transform.processor import TransformProcessor

log = logging.getLogger(__name__)

BEYLA_SDK_NAME = "beyla"
FALLBACK_CHECK_INTERVAL = 2.0
PART_NAMES = ("probe", "storage", "transform", "receiver", "discovery", "red", "beyla", "control")


def _probe(config: AgentConfig) -> ProbeReport:
    from coral_ebpf.capabilities import probe  # imports BCC lazily: keep it off the CLI's import path

    return probe(config.state_dir)


class Agent:
    """One running coral-ebpf agent (what `coral-ebpf start` runs)."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.started = time.time()
        self.slots = {name: ComponentSlot(name) for name in PART_NAMES}
        self.report: ProbeReport | None = None
        self.engine = ""
        self.engine_reason = ""
        self._storage: Storage | None = None
        self._processor: TransformProcessor | None = None
        self._consumer: Consumer | None = None
        self._discovery: Any = None
        self._supervisor: BeylaSupervisor | None = None
        self._red: RedEngine | None = None
        self._beyla_keys_not_applied: list[str] = []
        self._receiver: OtlpReceiver | None = None
        self._services: list[ServiceEntry] = []
        self._services_lock = threading.Lock()
        self._stopping = threading.Event()
        self._fallback_thread: threading.Thread | None = None
        self._started = False  # every part has been started (each may still be settling)
        self._check_config()

    def _check_config(self) -> None:
        if self.config.red.engine == "beyla" and not self.config.beyla.enabled:
            raise ConfigError(
                "red.engine is beyla but beyla.enabled is false: nothing would produce RED data",
                "set red.engine to auto or bcc, or beyla.enabled to true",
            )

    # ------------------------------------------------------------------ start

    def _run(self, name: str, component: Component) -> None:
        slot = self.slots[name]
        slot.component = component
        slot.set("starting")
        component.start()
        slot.set("running")

    def _query(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """Queries through the control socket, which answers from the first second of start."""
        storage = self._storage
        if storage is None:
            raise CoralError(
                "the agent is still starting: its database is not open yet",
                "try again in a moment; 'coral-ebpf status' shows each part's progress",
            )
        return query_executor(storage.reader)(kind, params)

    def start(self) -> None:
        """Start every part that can work here. Raises CoralError when the data path cannot start."""
        config = self.config
        prepare_state_dir(config.state_dir)
        # Before any BPF is loaded or Beyla started: another agent on this socket means we cannot serve.
        check_control_socket_free(config.control.socket)
        # The control socket answers first, so `coral-ebpf status` shows each part's progress while the
        # probe (tens of seconds under TCG) and the rest start.
        self._run("control", ControlServer(config.control.socket, self.status, self._query))
        self._start_probe()
        storage = Storage(config.storage)
        self._run("storage", storage)
        self._storage = storage
        processor = TransformProcessor(storage, agent_id=config.agent_id, retry_after=config.otlp.retry_after)
        self._run("transform", processor)
        self._processor = processor
        attributes = dict(config.beyla.attributes)
        self._consumer = StaticAttributesConsumer(processor, attributes) if attributes else processor
        receiver = OtlpReceiver(config.otlp, self._consumer)
        self._run("receiver", receiver)
        self._receiver = receiver
        self._start_discovery()
        self._start_red_engine()
        self._started = True
        log.info(
            "agent started",
            extra={
                "fields": {
                    "version": __version__,
                    "config": config.source,
                    "engine": self.engine,
                    "engine_reason": self.engine_reason,
                }
            },
        )

    def _start_probe(self) -> None:
        slot = self.slots["probe"]
        slot.set("starting", "probing what this kernel allows")
        try:
            self.report = _probe(self.config)
        except Exception as exc:  # the probe failing must not stop the data path
            slot.set("failed", f"capability probe failed: {exc}")
            log.warning("capability probe failed; eBPF parts stay off", extra={"fields": {"error": str(exc)}})
            return
        state = "ok" if self.report.complete else "incomplete"
        reason = "" if self.report.complete else "; ".join(self.report.notes) or "not every check could run"
        slot.set(state, reason)
        for name, verdict in self.report.components.items():
            log.info(
                "probe verdict",
                extra={"fields": {"component": name, "ok": verdict.ok, "reason": verdict.reason}},
            )

    def _verdict(self, component: str) -> Verdict:
        if self.report is None:
            return Verdict(False, "the capability probe did not run", "see the probe line in 'coral-ebpf status'")
        return self.report.verdict(component)

    def _start_discovery(self) -> None:
        slot = self.slots["discovery"]
        if not self.config.discovery.enabled:
            slot.set("disabled", "discovery.enabled is false")
            return
        verdict = self._verdict("bcc_discovery")
        if not verdict.ok:
            slot.set("unsupported", f"{verdict.reason} (fix: {verdict.fix})" if verdict.fix else verdict.reason)
            return
        from coral_ebpf.discovery.component import Discovery  # BCC import stays lazy

        found, beyla_path = self._beyla_binary
        discovery = Discovery(
            self.config.discovery,
            self.config.state_dir,
            agent_pids=[os.getpid()],
            beyla_paths=[beyla_path] if found else [],
            probe_report=self.report,
        )
        try:
            self._run("discovery", discovery)
        except CoralError as exc:
            slot.set("failed", str(exc))
            log.error("discovery failed to start", extra={"fields": {"error": str(exc)}})
            return
        self._discovery = discovery
        self._services = discovery.registry.snapshot()
        discovery.registry.subscribe(self._on_services_changed)

    def _on_services_changed(self, entries: list[ServiceEntry]) -> None:
        # Under the lock: an engine being attached takes the list and registers itself under it
        # too, so no change can fall between its first targets and its first update.
        with self._services_lock:
            self._services = list(entries)
            if self._supervisor is not None:
                self._supervisor.update_services(entries)
            if self._red is not None:
                self._red.set_targets(entries)

    @functools.cached_property
    def _beyla_binary(self) -> tuple[bool, str]:
        """(found, its path or why not): resolved once, for discovery's exclusion and the engine choice."""
        try:
            found = resolve_binary(self.config.beyla.binary)
        except CoralError as exc:
            return False, exc.message
        return True, str(found.path)

    def _start_red_engine(self) -> None:
        config = self.config
        beyla_verdict = self._verdict("beyla_application")
        binary_found, _binary_detail = self._beyla_binary
        self.engine, self.engine_reason = choose_engine(
            config.red.engine,
            beyla_verdict.ok or config.beyla.force_start,
            binary_found,
            config.beyla.enabled,
        )
        if config.beyla.enabled and config.red.engine != "bcc":
            self._start_beyla()
        elif not config.beyla.enabled:
            self.slots["beyla"].set("disabled", "beyla.enabled is false")
        else:
            self.slots["beyla"].set("disabled", "red.engine is bcc")
        if self.engine == "bcc":
            self._start_bcc_engine(self.engine_reason)
        elif config.red.engine == "auto":
            self.slots["red"].set("standby", f"{self.engine_reason}; the built-in probe starts if Beyla fails")
            self._fallback_thread = threading.Thread(
                target=self._watch_for_beyla_failure, name="red-fallback", daemon=True
            )
            self._fallback_thread.start()
        else:
            # red.engine beyla: no fallback, whatever happens to Beyla; say so rather than promise one.
            self.slots["red"].set(
                "standby", f"{self.engine_reason}; the built-in probe stays off (red.engine auto falls back to it)"
            )

    def _bound_otlp(self) -> OtlpSettings:
        """The receiver's settings with the addresses it actually bound (port 0 becomes the real port),
        which is where Beyla must send and which ports it must leave alone."""
        settings = self.config.otlp
        receiver = self._receiver
        if receiver is None:
            return settings
        return replace(
            settings,
            grpc_endpoint=receiver.grpc_address or settings.grpc_endpoint,
            http_endpoint=receiver.http_address or settings.http_endpoint,
        )

    def _start_beyla(self) -> None:
        config = self.config
        processor = self._processor
        otlp = self._bound_otlp()
        with self._services_lock:
            supervisor = BeylaSupervisor(
                config.beyla,
                otlp_endpoint=otlp_endpoint_url(otlp, config.beyla),
                probe=self.report or self._verdict("beyla_application"),
                services=list(self._services),
                last_data_seen=(lambda: processor.last_seen(BEYLA_SDK_NAME)) if processor else None,
                agent_ports=agent_ports(otlp),
            )
            self._supervisor = supervisor
        self._run("beyla", supervisor)

    def _start_bcc_engine(self, reason: str) -> None:
        slot = self.slots["red"]
        verdict = self._verdict("red_bcc")
        if not verdict.ok:
            slot.set("unsupported", f"{verdict.reason} (fix: {verdict.fix})" if verdict.fix else verdict.reason)
            return
        assert self._consumer is not None
        engine = RedEngine(self.config.red, self._consumer, self.config.state_dir)
        try:
            engine.start()
        except CoralError as exc:
            slot.component = engine
            slot.set("failed", str(exc))
            log.error("built-in RED engine failed to start", extra={"fields": {"error": str(exc)}})
            return
        with self._services_lock:
            engine.set_targets(self._services)
            self._red = engine
        slot.component = engine
        slot.set("running", reason)
        self.engine, self.engine_reason = "bcc", reason
        self._beyla_keys_not_applied = beyla_only_keys_set(self.config.beyla)
        if self._beyla_keys_not_applied:
            log.warning(
                "configured keys that only Beyla applies have no effect on the built-in BCC engine",
                extra={"fields": {"keys": ",".join(self._beyla_keys_not_applied), "routes_key": "red.routes"}},
            )

    def _watch_for_beyla_failure(self) -> None:
        """red.engine auto: when Beyla gives up (state failed or unsupported), serve RED with the BCC probe."""
        while not self._stopping.wait(FALLBACK_CHECK_INTERVAL):
            supervisor = self._supervisor
            if supervisor is None:
                return
            beyla = supervisor.status()
            if beyla.get("state") in ("failed", "unsupported"):
                diagnosis = beyla.get("diagnosis") or {}
                why = diagnosis.get("message") if isinstance(diagnosis, dict) else str(diagnosis)
                cause = why or beyla.get("reason", "no diagnosis")
                reason = f"Beyla is {beyla['state']} ({cause}): using the built-in BCC probe"
                log.warning("falling back to the built-in RED engine", extra={"fields": {"reason": reason}})
                self._start_bcc_engine(reason)
                return

    # ------------------------------------------------------------------ stop

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every running part in reverse start order within about `timeout` seconds."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        if self._fallback_thread is not None:
            # A fallback engine still starting must finish first, or it would be left running after stop.
            self._fallback_thread.join(max(1.0, timeout / 2))
        for name in reversed(PART_NAMES):
            slot = self.slots[name]
            if slot.component is None or slot.state not in ("running", "failed"):
                continue
            remaining = max(1.0, deadline - time.monotonic())
            try:
                slot.component.stop(remaining)
                slot.set("stopped")
            except Exception as exc:
                log.exception("stopping %s failed", name)
                slot.set("failed", f"stop failed: {exc}")
        log.info("agent stopped")

    def run(self, stop: StopSignal) -> None:
        """Start, serve until a stop signal, then stop. The caller holds the single-instance lock."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        stop.wait()
        log.info("stop requested", extra={"fields": {"signal": stop.received}})
        self.stop()

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "agent": {
                "version": __version__,
                "pid": os.getpid(),
                "state": "stopping" if self._stopping.is_set() else "running" if self._started else "starting",
                "agent_id": self.config.agent_id,
                "started": self.started,
                "uptime_s": round(time.time() - self.started, 1),
                "config": self.config.source,
                "state_dir": str(self.config.state_dir),
                "red_engine": self.engine,
                "red_engine_reason": self.engine_reason,
            },
            "probe": self._probe_status(),
        }
        for name in PART_NAMES[1:]:
            document[name] = self.slots[name].status()
        document["red"].setdefault("engine", self.engine)
        document["red"].setdefault("reason", self.engine_reason)
        if self.engine == "bcc" and self._beyla_keys_not_applied:
            document["red"]["not_applied"] = {
                "keys": list(self._beyla_keys_not_applied),
                "why": "they configure Beyla's output; the BCC engine takes its route patterns from red.routes",
            }
        if self._supervisor is not None:
            document["beyla"]["history"] = self._beyla_history()
        # The fields readers rely on exist even for a Beyla that never ran (disabled, red.engine bcc).
        for key, value in (("restarts", 0), ("starts", 0), ("diagnosis", None), ("pid", None), ("services", 0)):
            document["beyla"].setdefault(key, value)
        return document

    def _beyla_history(self, last: int = 30) -> list[dict[str, Any]]:
        """Beyla's recent state transitions (wall-clock `at`, state, and why: back-off delay, attempt, ...)."""
        assert self._supervisor is not None
        return [
            {key: value for key, value in entry.items() if key != "t"}  # monotonic time means nothing outside
            for entry in self._supervisor.history()[-last:]
        ]

    def _probe_status(self) -> dict[str, Any]:
        slot = self.slots["probe"]
        body: dict[str, Any] = {"state": slot.state, "since": slot.since}
        if slot.reason:
            body["reason"] = slot.reason
        if self.report is not None:
            body["duration_ms"] = round(self.report.duration_ms, 1)
            body["kernel"] = self.report.kernel.get("release")
            body["summary"] = {name: ("ok" if v.ok else "no") for name, v in self.report.components.items()}
            body["components"] = self.report.to_dict()["components"]
            body["features"] = {name: f.available for name, f in self.report.features.items()}
        return body


def parts_summary(document: dict[str, Any], parts: Sequence[str] = PART_NAMES) -> dict[str, str]:
    """{part: state} from a status document (used by tests and the log line at start)."""
    return {part: str(document.get(part, {}).get("state", "?")) for part in parts}
