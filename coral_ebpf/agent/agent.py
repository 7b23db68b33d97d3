"""The agent: wires the parts together and owns start and stop.

The control socket starts first, so `status` answers from the first second (`agent.state`
`starting`, each part `pending`, `starting` or settled; queries say the database is not open yet).
The rest follows the data (the order of `Part`): probe → storage → transform → OTLP receiver →
discovery → RED engine (Beyla supervisor or the built-in BCC probe, chosen by the RED arbiter) →
operator listener. Stop runs in reverse order of `Part` (the control socket among the first), so
every part that feeds another stops before the part it feeds, and data already accepted is written
before the database closes.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from coral_ebpf import __version__
from coral_ebpf.agent import sd_notify
from coral_ebpf.agent.beyla_link import BeylaWithLink, bound, link_settings
from coral_ebpf.agent.component import Component
from coral_ebpf.agent.config import AgentConfig, check, load_config
from coral_ebpf.agent.control import ControlServer, check_control_socket_free
from coral_ebpf.agent.lifecycle import ComponentSlot, StopSignal, prepare_state_dir
from coral_ebpf.agent.ports import TakenPort, without_taken_defaults
from coral_ebpf.agent.reload import ExcludeTarget, ReloadPlan, ReloadSignal, apply_live, plan_reload
from coral_ebpf.agent.static_attributes import StaticAttributesConsumer
from coral_ebpf.agent.status import AgentInfo, Part, PartStatus, StatusDocument
from coral_ebpf.agent.telemetry_source import AgentTelemetry
from coral_ebpf.ask.backend import InAgentBackend
from coral_ebpf.beyla.binary import resolve_binary
from coral_ebpf.beyla.settings import beyla_only_keys_set
from coral_ebpf.beyla.supervisor import BeylaSupervisor
from coral_ebpf.beyla.target import agent_ports, otlp_endpoint_url
from coral_ebpf.capabilities.report import ProbeComponent, ProbeReport, Verdict
from coral_ebpf.consumer import Consumer
from coral_ebpf.discovery.model import ServiceEntry
from coral_ebpf.errors import ConfigError, CoralError
from coral_ebpf.export.exporter import OtlpExporter
from coral_ebpf.export.tee import ExportingConsumer
from coral_ebpf.memory.budget import MemoryBudget, tame_allocators
from coral_ebpf.memory.consumer import BudgetedConsumer
from coral_ebpf.otlp.receiver import OtlpReceiver
from coral_ebpf.otlp.settings import OtlpSettings
from coral_ebpf.query.dispatch import query_executor
from coral_ebpf.red.arbiter import RedArbiter
from coral_ebpf.red.engine import RedEngine
from coral_ebpf.red.selection import Engine
from coral_ebpf.resident import release_after_start
from coral_ebpf.state import ACTIVE_STATES, PartState
from coral_ebpf.storage.writer import Storage
from coral_ebpf.telemetry.red_totals import RedTotals
from coral_ebpf.telemetry.server import OperatorServer
from coral_ebpf.telemetry.settings import DEFAULT_TELEMETRY_ENDPOINT
from coral_ebpf.transform.processor import TransformProcessor
from coral_ebpf.ui.app import build_ui_app
from coral_ebpf.ui.settings import UI_PREFIX

log = logging.getLogger(__name__)

BEYLA_SDK_NAME = "beyla"


def _probe(config: AgentConfig) -> ProbeReport:
    from coral_ebpf.capabilities.kernel_probe import probe  # imports BCC: keep it off the CLI's import path

    return probe(config.state_dir)


def _verdict_text(verdict: Verdict) -> str:
    return f"{verdict.reason} (fix: {verdict.fix})" if verdict.fix else verdict.reason


class Agent:
    """One running coral-ebpf agent (what `coral-ebpf start` runs)."""

    def __init__(self, config: AgentConfig) -> None:
        check(config)  # a config made in code has not been through load_config's validation
        self.config = config
        self.started = time.time()
        self.slots = {part: ComponentSlot(part.value) for part in Part}
        self.report: ProbeReport | None = None
        self.arbiter = RedArbiter(config.red.engine, config.beyla.enabled, self._start_bcc_engine)
        self._processor: TransformProcessor | None = None
        self._consumer: Consumer | None = None
        self._memory: MemoryBudget | None = None
        self._supervisor: BeylaSupervisor | None = None
        self._red: RedEngine | None = None
        self._beyla_keys_not_applied: list[str] = []
        self._receiver: OtlpReceiver | None = None
        self._services: list[ServiceEntry] = []
        self._services_lock = threading.Lock()
        self._discovery: ExcludeTarget | None = None  # for a reload's discovery.exclude
        self.red_totals = RedTotals()
        self.last_reload: dict[str, Any] | None = None
        self._ports_taken: tuple[TakenPort, ...] = ()
        # Built now (it reads the TLS files and the token) so a bad telemetry section fails before any BPF loads.
        self._operator_server = self._operator_listener()
        # The query executor over the open database (the control socket's and the web view's); None until then.
        self._executor: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
        self._stopping = threading.Event()
        self._started = False  # every part has been started (each may still be settling)

    # ------------------------------------------------------------------ start

    def _run(self, part: Part, component: Component) -> None:
        slot = self.slots[part]
        slot.component = component
        slot.set(PartState.STARTING)
        component.start()
        slot.set(PartState.RUNNING)

    def _query(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """Queries through the control socket, which answers from the first second of start."""
        executor = self._executor
        if executor is None:
            raise CoralError(
                "the agent is still starting: its database is not open yet",
                "try again in a moment; 'coral-ebpf status' shows each part's progress",
            )
        return executor(kind, params)

    def start(self) -> None:
        """Start every part that can work here. Raises CoralError when the data path cannot start."""
        config = self.config
        prepare_state_dir(config.state_dir)
        tame_allocators()  # before the threads that allocate start
        # Before any BPF is loaded or Beyla started: another agent on this socket means we cannot serve.
        check_control_socket_free(config.control.socket)
        # The control socket answers first, so `coral-ebpf status` shows each part's progress while the
        # probe (tens of seconds under TCG) and the rest start.
        self._run(Part.CONTROL, ControlServer(config.control.socket, self.status, self._query))
        self._start_probe()
        storage = Storage(config.storage)
        storage.on_commit(self.red_totals.observe)
        self._run(Part.STORAGE, storage)
        self._executor = query_executor(storage.reader)
        processor = TransformProcessor(
            storage,
            agent_id=config.agent_id,
            retry_after=config.otlp.retry_after,
            max_time_ahead=config.otlp.max_time_ahead,
        )
        self._run(Part.TRANSFORM, processor)
        self._processor = processor
        inner: Consumer = processor
        if config.export.otlp is not None:
            # Ahead of the transform, so whatever is accepted (SDKs, Beyla, the BCC engine) is exported too.
            exporter = OtlpExporter(config.export.otlp, config.agent_id)
            self._run(Part.EXPORT, exporter)
            inner = ExportingConsumer(processor, exporter.queue, retry_after=config.otlp.retry_after)
        else:
            self.slots[Part.EXPORT].set(PartState.DISABLED, "no export.otlp section")
        attributes = dict(config.beyla.attributes)
        self._consumer = StaticAttributesConsumer(inner, attributes) if attributes else inner
        self._memory = MemoryBudget(config.limits.memory, config.storage.memory_limit, lambda: storage.bytes_in_flight)
        public, self._ports_taken = without_taken_defaults(config.otlp)
        for taken in self._ports_taken:
            log.warning("default OTLP port taken; starting without it", extra={"fields": {"why": taken.describe()}})
        receiver = OtlpReceiver(public, BudgetedConsumer(self._consumer, self._memory, config.otlp.retry_after))
        self._run(Part.RECEIVER, receiver)
        self._receiver = receiver
        self._start_discovery()
        self._start_red_engine()
        if config.colony_api.enabled:
            from coral_ebpf.pullapi.server import PullApiServer  # its generated gRPC code loads only when used

            self._run(Part.COLONY_API, PullApiServer(config.colony_api, storage.reader, config.agent_id))
        else:
            self.slots[Part.COLONY_API].set(PartState.DISABLED, "colony_api.endpoint is not set")
        self._start_telemetry()
        release_after_start()  # pages only loading touched, and heap freed since, go back to the kernel
        self._memory.calibrate()  # the agent's own footprint, every part loaded (BCC programs included)
        # Half the in-flight share gathered is worth a write: the other half keeps accepting meanwhile.
        storage.write_at_bytes(self._memory.in_flight_limit // 2)
        self._started = True
        log.info(
            "agent started",
            extra={
                "fields": {
                    "version": __version__,
                    "config": config.source,
                    "engine": self.arbiter.engine or "",
                    "engine_reason": self.arbiter.reason,
                }
            },
        )

    def _operator_listener(self) -> OperatorServer | None:
        if self.config.telemetry.endpoint is None:
            return None
        mounts: dict[str, web.Application] = {}
        if self.config.ui.enabled:
            # The read-only web view, behind the listener's TLS and token; it answers once storage runs.
            backend = InAgentBackend(self._query, lambda: self.status().to_json())
            mounts[UI_PREFIX] = build_ui_app(backend)
        return OperatorServer(
            self.config.telemetry, AgentTelemetry(lambda: self.status().to_json(), self.red_totals), mounts=mounts
        )

    def _start_telemetry(self) -> None:
        settings = self.config.telemetry
        slot = self.slots[Part.TELEMETRY]
        server = self._operator_server
        if server is None:
            slot.set(PartState.DISABLED, "telemetry.endpoint is empty")
            return
        try:
            self._run(Part.TELEMETRY, server)
        except CoralError as exc:
            if settings.endpoint != DEFAULT_TELEMETRY_ENDPOINT:
                raise  # an endpoint the operator chose and we cannot serve is a start error
            # The default port taken (another exporter on 9464): the data path still works.
            slot.set(PartState.FAILED, str(exc))
            log.warning("operator listener not started", extra={"fields": {"error": exc.message}})

    def _start_probe(self) -> None:
        slot = self.slots[Part.PROBE]
        slot.set(PartState.STARTING, "probing what this kernel allows")
        try:
            self.report = _probe(self.config)
        except Exception as exc:  # the probe failing must not stop the data path
            slot.set(PartState.FAILED, f"capability probe failed: {exc}")
            log.warning("capability probe failed; eBPF parts stay off", extra={"fields": {"error": str(exc)}})
            return
        state = PartState.OK if self.report.complete else PartState.INCOMPLETE
        reason = "" if self.report.complete else "; ".join(self.report.notes) or "not every check could run"
        slot.set(state, reason)
        for name, verdict in self.report.components.items():
            log.info(
                "probe verdict",
                extra={"fields": {"component": str(name), "ok": verdict.ok, "reason": verdict.reason}},
            )

    def _verdict(self, component: ProbeComponent) -> Verdict:
        if self.report is None:
            return Verdict(False, "the capability probe did not run", "see the probe line in 'coral-ebpf status'")
        return self.report.verdict(component)

    def _start_discovery(self) -> None:
        slot = self.slots[Part.DISCOVERY]
        if not self.config.discovery.enabled:
            slot.set(PartState.DISABLED, "discovery.enabled is false")
            return
        verdict = self._verdict(ProbeComponent.BCC_DISCOVERY)
        if not verdict.ok:
            slot.set(PartState.UNSUPPORTED, _verdict_text(verdict))
            return
        from coral_ebpf.discovery.component import Discovery  # BCC import stays lazy

        found, beyla_path = self._beyla_binary
        discovery = Discovery(
            self.config.discovery,
            self.config.state_dir,
            agent_pids=[os.getpid()],
            beyla_paths=[beyla_path] if found else [],
            probe_report=self.report,
            services=self.config.services,
        )
        try:
            self._run(Part.DISCOVERY, discovery)
        except CoralError as exc:
            slot.set(PartState.FAILED, str(exc))
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
        beyla_verdict = self._verdict(ProbeComponent.BEYLA_APPLICATION)
        binary_found, _binary_detail = self._beyla_binary
        plan = self.arbiter.decide(beyla_verdict.ok or config.beyla.force_start, binary_found)
        if plan.start_beyla:
            self._start_beyla()
        else:
            self.slots[Part.BEYLA].set(PartState.DISABLED, plan.beyla_off_reason)
        if plan.start_builtin:
            self._start_bcc_engine(plan.reason)
        else:
            self.slots[Part.RED].set(PartState.STANDBY, plan.standby_reason)

    def _bound_otlp(self) -> OtlpSettings:
        """The receiver's settings with the addresses it actually bound (port 0 becomes the real port),
        which is where Beyla must send and which ports it must leave alone."""
        settings = self.config.otlp
        receiver = self._receiver
        if receiver is None:
            return settings
        return replace(settings, grpc_endpoint=receiver.grpc_address, http_endpoint=receiver.http_address)

    def _start_beyla(self) -> None:
        config = self.config
        processor = self._processor
        assert self._consumer is not None
        # Beyla sends to a private loopback listener, never to the public ports (see beyla_link).
        link = OtlpReceiver(link_settings(config.otlp, config.beyla), self._consumer)
        link.start()
        link_bound = bound(link)
        with self._services_lock:
            supervisor = BeylaSupervisor(
                config.beyla,
                otlp_endpoint=otlp_endpoint_url(link_bound, config.beyla),
                probe=self.report or self._verdict(ProbeComponent.BEYLA_APPLICATION),
                services=list(self._services),
                last_data_seen=(lambda: processor.last_seen(BEYLA_SDK_NAME)) if processor else None,
                agent_ports=agent_ports(self._bound_otlp()) + agent_ports(link_bound),
            )
            self._supervisor = supervisor
        supervisor.subscribe(self.arbiter.on_beyla_state)
        self._run(Part.BEYLA, BeylaWithLink(supervisor, link))

    def _start_bcc_engine(self, reason: str) -> bool:
        """Start the built-in engine (at start, or as the arbiter's fallback); True if it runs."""
        slot = self.slots[Part.RED]
        verdict = self._verdict(ProbeComponent.RED_BCC)
        if not verdict.ok:
            slot.set(PartState.UNSUPPORTED, _verdict_text(verdict))
            return False
        assert self._consumer is not None
        engine = RedEngine(self.config.red, self._consumer, self.config.state_dir)
        try:
            engine.start()
        except CoralError as exc:
            slot.component = engine
            slot.set(PartState.FAILED, str(exc))
            log.error("built-in RED engine failed to start", extra={"fields": {"error": str(exc)}})
            return False
        with self._services_lock:
            engine.set_targets(self._services)
            self._red = engine
        slot.component = engine
        slot.set(PartState.RUNNING, reason)
        self.arbiter.builtin_started(reason)
        self._beyla_keys_not_applied = beyla_only_keys_set(self.config.beyla)
        if self._beyla_keys_not_applied:
            log.warning(
                "configured keys that only Beyla applies have no effect on the built-in BCC engine",
                extra={"fields": {"keys": ",".join(self._beyla_keys_not_applied), "routes_key": "red.routes"}},
            )
        return True

    # ------------------------------------------------------------------ stop

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every running part in reverse start order within about `timeout` seconds."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self.arbiter.stop(max(1.0, timeout / 2))
        for part in reversed(Part):
            slot = self.slots[part]
            if slot.component is None or slot.state not in ACTIVE_STATES:
                continue
            remaining = max(1.0, deadline - time.monotonic())
            try:
                slot.component.stop(remaining)
                slot.set(PartState.STOPPED)
            except Exception as exc:
                log.exception("stopping %s failed", part)
                slot.set(PartState.FAILED, f"stop failed: {exc}")
        log.info("agent stopped")

    def run(self, stop: StopSignal, reload: ReloadSignal | None = None) -> None:
        """Start, serve until a stop signal (reloading the config on each `reload` signal), then stop.
        The caller holds the single-instance lock. Tells systemd READY=1 once every part has
        started and STOPPING=1 when the stop begins (a no-op outside systemd)."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        failed = [str(part) for part, slot in self.slots.items() if slot.state == PartState.FAILED]
        sd_notify.ready(f"serving; failed parts: {', '.join(failed)}" if failed else "serving")
        while not stop.wait(None if reload is None else 0.5):
            if reload is not None and reload.take():
                self.reload()
        log.info("stop requested", extra={"fields": {"signal": stop.received}})
        sd_notify.stopping()
        self.stop()

    def reload(self) -> ReloadPlan | None:
        """Re-read the config file; apply what can change live and log what needs a restart."""
        sd_notify.reloading()
        try:
            new = load_config(self.config.source if self.config.source != "(defaults)" else None)
        except ConfigError as exc:
            self.last_reload = {"at": time.time(), "error": str(exc), "applied": [], "needs_restart": []}
            log.error("config reload failed; the running config is kept", extra={"fields": {"error": exc.message}})
            sd_notify.ready("serving; the last reload failed")
            return None
        plan = plan_reload(self.config, new)
        self.config = plan.config
        apply_live(plan, discovery=self._discovery, red=self._red, beyla=self._supervisor)
        log.debug(  # seen only when the reload turned debug on: the new level is in force
            "live settings after reload",
            extra={
                "fields": {
                    "exclude": ",".join(plan.config.discovery.exclude),
                    "red_routes": ",".join(plan.config.red.routes),
                }
            },
        )
        self.last_reload = {
            "at": time.time(),
            "error": None,
            "applied": list(plan.applied),
            "needs_restart": list(plan.needs_restart),
        }
        log.info(
            "config reloaded",
            extra={
                "fields": {
                    "applied": ",".join(plan.applied) or "nothing changed",
                    "needs_restart": ",".join(plan.needs_restart) or "nothing",
                }
            },
        )
        sd_notify.ready(
            "serving; restart to apply: " + ", ".join(plan.needs_restart) if plan.needs_restart else "serving"
        )
        return plan

    # ------------------------------------------------------------------ status

    def status(self) -> StatusDocument:
        engine, engine_reason = str(self.arbiter.engine or ""), self.arbiter.reason
        agent = AgentInfo(
            version=__version__,
            pid=os.getpid(),
            state=self._agent_state(),
            agent_id=self.config.agent_id,
            started=self.started,
            config=self.config.source,
            state_dir=str(self.config.state_dir),
            red_engine=engine,
            red_engine_reason=engine_reason,
            memory=self._memory.status() if self._memory is not None else None,
            last_reload=self.last_reload,
        )
        parts: dict[Part, PartStatus] = {part: self.slots[part].status() for part in Part if part != Part.PROBE}
        parts[Part.PROBE] = self._probe_status()
        red = parts[Part.RED]
        # The part's own reason (e.g. why the built-in engine is unsupported) says more than the engine choice.
        red_details: dict[str, Any] = {"engine": engine, **({} if red.reason else {"reason": engine_reason})}
        red_details.update(red.details)
        if self.arbiter.engine == Engine.BCC and self._beyla_keys_not_applied:
            red_details["not_applied"] = {
                "keys": list(self._beyla_keys_not_applied),
                "why": "they configure Beyla's output; the BCC engine takes its route patterns from red.routes",
            }
        parts[Part.RED] = replace(red, details=red_details)
        if self._ports_taken:
            receiver = parts[Part.RECEIVER]
            receiver_details: dict[str, Any] = dict(receiver.details)
            receiver_details["notes"] = [taken.describe() for taken in self._ports_taken]
            receiver_details["ports_taken"] = [
                {"key": t.key, "endpoint": t.endpoint, "holders": [{"pid": h.pid, "name": h.name} for h in t.holders]}
                for t in self._ports_taken
            ]
            parts[Part.RECEIVER] = replace(receiver, details=receiver_details)
        # The fields readers rely on exist even for a Beyla that never ran (disabled, red.engine bcc).
        beyla = parts[Part.BEYLA]
        beyla_details: dict[str, Any] = {
            "restarts": 0,
            "starts": 0,
            "diagnosis": None,
            "pid": None,
            "services": 0,
            **beyla.details,
        }
        if self._supervisor is not None:
            beyla_details["history"] = self._beyla_history()
        parts[Part.BEYLA] = replace(beyla, details=beyla_details)
        return StatusDocument(agent, parts)

    def _agent_state(self) -> PartState:
        """`starting` until every part has been started (each may still be settling), `stopping` once stop began."""
        if self._stopping.is_set():
            return PartState.STOPPING
        return PartState.RUNNING if self._started else PartState.STARTING

    def _beyla_history(self, last: int = 30) -> list[dict[str, Any]]:
        """Beyla's recent state transitions (wall-clock `at`, state, and why: back-off delay, attempt, ...)."""
        assert self._supervisor is not None
        return [
            {key: value for key, value in entry.items() if key != "t"}  # monotonic time means nothing outside
            for entry in self._supervisor.history()[-last:]
        ]

    def _probe_status(self) -> PartStatus:
        slot = self.slots[Part.PROBE]
        details: dict[str, Any] = {}
        if self.report is not None:
            details["duration_ms"] = round(self.report.duration_ms, 1)
            details["kernel"] = self.report.kernel.get("release")
            details["summary"] = {str(name): ("ok" if v.ok else "no") for name, v in self.report.components.items()}
            details["components"] = self.report.to_dict()["components"]
            details["features"] = {name: f.available for name, f in self.report.features.items()}
        return PartStatus(slot.state, slot.since, slot.reason, details)
