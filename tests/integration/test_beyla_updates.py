"""Discovery changes: debounced restart, no restart for an unchanged config, and keeping the old
configuration when the new one is rejected (by Beyla's schema before starting, or by Beyla itself)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from coral_ebpf.beyla import render as render_module
from coral_ebpf.beyla import schema
from coral_ebpf.beyla.supervisor import BeylaSupervisor
from coral_ebpf.discovery.model import ServiceEntry
from tests.beyla_standin import install_standin, runs
from tests.helpers.timing import quiet_period
from tests.integration.beyla_support import http_service, settings_for, states, wait_for


@pytest.fixture
def services() -> Iterator[list[ServiceEntry]]:
    with ExitStack() as stack:
        yield [stack.enter_context(http_service()) for _ in range(2)]


@pytest.fixture
def started(tmp_path: Path, services: list[ServiceEntry]) -> Iterator[Any]:
    created: list[BeylaSupervisor] = []

    def start(control: dict[str, Any] | None = None, **beyla: Any) -> tuple[BeylaSupervisor, Path]:
        binary = install_standin(tmp_path / "bin", control or {})
        supervisor = BeylaSupervisor(
            settings_for(tmp_path / "state", binary, **beyla),
            otlp_endpoint="http://127.0.0.1:9",
            services=[services[0]],
        )
        created.append(supervisor)
        supervisor.start()
        wait_for(supervisor, lambda s: s["state"] == "running")
        return supervisor, binary.parent

    yield start
    for supervisor in created:
        supervisor.stop(15)


def instrumented_ports(status: dict[str, Any]) -> set[str]:
    document = yaml.safe_load(Path(status["config_path"]).read_text())
    return {selector["open_ports"] for selector in document["discovery"]["instrument"]}


def test_a_burst_of_changes_restarts_beyla_once_after_the_debounce(started: Any, services: list[ServiceEntry]) -> None:
    supervisor, bindir = started(debounce="500ms")
    first = supervisor.status()
    before = len(runs(bindir))
    for _ in range(5):
        supervisor.update_services([services[0], services[1]])
        time.sleep(0.05)  # the burst's pace: five changes well inside one debounce
    assert supervisor.status()["pending_update"] is True
    status = wait_for(supervisor, lambda s: s["state"] == "running" and s["pid"] != first["pid"])
    quiet_period(1.0)  # nothing else is coming
    assert len(runs(bindir)) == before + 1
    assert instrumented_ports(status) == {str(services[0].ports[0]), str(services[1].ports[0])}
    assert status["last_stop"]["why"] == "services changed" and status["last_stop"]["sigkill"] is False
    assert status["restarts"] == 0  # a planned restart is not a failure


def test_the_same_services_do_not_restart_beyla(started: Any, services: list[ServiceEntry]) -> None:
    supervisor, bindir = started()
    pid = supervisor.status()["pid"]
    before = len(runs(bindir))
    reordered = [services[0]]
    supervisor.update_services(reordered)
    wait_for(supervisor, lambda s: not s["pending_update"])
    quiet_period(0.5)  # a restart would begin by now
    assert supervisor.status()["pid"] == pid and len(runs(bindir)) == before


def test_losing_every_service_stops_beyla_and_goes_idle(started: Any) -> None:
    supervisor, _ = started()
    supervisor.update_services([])
    status = wait_for(supervisor, lambda s: s["state"] == "idle")
    assert status["pid"] is None


def test_config_rejected_by_beyla_rolls_back_to_the_previous_one(started: Any, services: list[ServiceEntry]) -> None:
    bad_port = services[1].ports[0]
    supervisor, bindir = started({"reject_ports": [bad_port]})
    supervisor.update_services([services[0], services[1]])
    status = wait_for(supervisor, lambda s: s["config_rejected"] is not None and s["state"] == "running")
    assert status["config_rejected"]["by"] == "beyla"
    assert status["config_rejected"]["diagnosis"]["kind"] == "wrong_configuration"
    assert instrumented_ports(status) == {str(services[0].ports[0])}
    assert status["restarts"] == 0 and status["diagnosis"] is None
    rejected_run = runs(bindir)[-2]
    assert yaml.safe_load(Path(rejected_run["config"]).read_text()) is not None
    assert "rolled back to the previous configuration" in [e.get("reason") for e in supervisor.history()]


def test_config_rejected_by_the_schema_keeps_the_old_instance_running(
    started: Any, services: list[ServiceEntry], monkeypatch: pytest.MonkeyPatch
) -> None:
    supervisor, bindir = started()
    pid = supervisor.status()["pid"]
    before = len(runs(bindir))
    bad_port = str(services[1].ports[0])
    real = schema.schema_errors  # what render imported, before the patch

    def stricter(document: dict[str, Any]) -> list[str]:
        selectors = document.get("discovery", {}).get("instrument", [])
        found = [f"discovery.instrument: port {bad_port} refused" for s in selectors if bad_port in s["open_ports"]]
        return found + real(document)

    monkeypatch.setattr(render_module, "schema_errors", stricter)
    supervisor.update_services([services[0], services[1]])
    status = wait_for(supervisor, lambda s: s["config_rejected"] is not None)
    assert status["config_rejected"]["by"] == "agent"
    assert f"port {bad_port} refused" in status["config_rejected"]["diagnosis"]["message"]
    assert status["pid"] == pid and status["state"] == "running" and len(runs(bindir)) == before
    assert "backoff" not in states(supervisor)


def test_a_configuration_beyla_rejected_is_not_retried_for_the_same_services(
    started: Any, services: list[ServiceEntry]
) -> None:
    supervisor, bindir = started({"reject_ports": [services[1].ports[0]]})
    supervisor.update_services([services[0], services[1]])
    status = wait_for(supervisor, lambda s: s["config_rejected"] is not None and s["state"] == "running")
    before = len(runs(bindir))
    supervisor.update_services([services[1], services[0]])
    wait_for(supervisor, lambda s: not s["pending_update"])
    quiet_period(0.5)  # a restart would begin by now
    assert len(runs(bindir)) == before and supervisor.status()["pid"] == status["pid"]


def test_beylas_own_listener_in_discovery_does_not_restart_it(started: Any, services: list[ServiceEntry]) -> None:
    import psutil

    from coral_ebpf.discovery.model import Listener

    supervisor, bindir = started()
    status = supervisor.status()
    beyla = psutil.Process(status["pid"])
    own = ServiceEntry(
        pid=beyla.pid,
        netns=0,
        name="beyla",
        exe=beyla.exe(),
        cmdline=tuple(beyla.cmdline()),
        listeners=(Listener(status["health"]["port"]),),
    )
    before = len(runs(bindir))
    supervisor.update_services([services[0], own])
    wait_for(supervisor, lambda s: not s["pending_update"])
    quiet_period(0.5)  # a restart would begin by now
    assert supervisor.status()["pid"] == status["pid"] and len(runs(bindir)) == before
