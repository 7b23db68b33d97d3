"""A `beyla.binary` that is not Beyla is called that, once, and never restarted.

Every Beyla release logs its `Grafana Beyla` version line first thing; these binaries do not: a
real system program (`sleep`, which rejects the `-config` flag) and a script that prints a
line and then waits.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from coral_ebpf.beyla.supervisor import BeylaSupervisor
from coral_ebpf.beyla.version import VersionDetectionError, detect_version
from coral_ebpf.discovery.model import ServiceEntry
from coral_ebpf.red.arbiter import RedArbiter
from coral_ebpf.red.selection import Engine
from coral_ebpf.state import PartState, StateChange
from tests.beyla_standin import install_standin, runs
from tests.helpers.timing import quiet_period
from tests.integration.beyla_support import http_service, settings_for, wait_for


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir(mode=0o755)
    return directory


def _sleep_as_beyla(bindir: Path) -> Path:
    sleep = shutil.which("sleep")
    assert sleep is not None
    binary = bindir / "beyla"
    shutil.copy(sleep, binary)
    os.chmod(binary, 0o755)
    return binary


def _script(bindir: Path, body: str) -> Path:
    binary = bindir / "beyla"
    binary.write_text(f"#!/bin/sh\n{body}\n")
    os.chmod(binary, 0o755)
    return binary


class Fallback:
    """The RED arbiter (red.engine auto, Beyla chosen) listening to the supervisor, as the agent wires it."""

    def __init__(self, supervisor: BeylaSupervisor) -> None:
        self.changes: list[StateChange] = []
        self.builtin_reasons: list[str] = []
        self.arbiter = RedArbiter("auto", True, self._start_builtin, spawn=lambda work: work())
        assert self.arbiter.decide(True, True).engine == Engine.BEYLA
        supervisor.subscribe(self.changes.append)
        supervisor.subscribe(self.arbiter.on_beyla_state)

    def _start_builtin(self, reason: str) -> bool:
        self.builtin_reasons.append(reason)
        return True


@pytest.fixture
def service() -> Iterator[ServiceEntry]:
    with http_service() as entry:
        yield entry


def test_sleep_is_not_beyla(bindir: Path) -> None:
    binary = _sleep_as_beyla(bindir)
    with pytest.raises(VersionDetectionError) as caught:
        detect_version(binary, None, timeout=10)
    diagnosis = caught.value.diagnosis
    assert diagnosis is not None and (diagnosis.kind, diagnosis.retryable) == ("not_beyla", False)
    assert diagnosis.message.startswith(f"not a Beyla binary: {binary} printed no 'Grafana Beyla' version line")
    assert "it exited with status 1" in diagnosis.message
    assert "invalid option" in diagnosis.message and "invalid option" in diagnosis.line


def test_a_script_that_prints_and_waits_is_not_beyla(bindir: Path) -> None:
    binary = _script(bindir, "echo 'level=INFO msg=\"starting up\"'\nexec sleep 60")
    with pytest.raises(VersionDetectionError) as caught:
        detect_version(binary, None, timeout=2)
    diagnosis = caught.value.diagnosis
    assert diagnosis is not None and diagnosis.kind == "not_beyla"
    assert '(it printed none within 2s; its output began: level=INFO msg="starting up")' in diagnosis.message


def test_the_supervisor_fails_once_and_does_not_restart(tmp_path: Path, bindir: Path, service: ServiceEntry) -> None:
    binary = _sleep_as_beyla(bindir)
    supervisor = BeylaSupervisor(
        settings_for(tmp_path / "state", binary), otlp_endpoint="http://127.0.0.1:9", services=[service]
    )
    fallback = Fallback(supervisor)
    supervisor.start()
    try:
        status = wait_for(supervisor, lambda s: s["state"] == "failed")
        assert status["diagnosis"]["kind"] == "not_beyla"
        assert status["diagnosis"]["message"].startswith("not a Beyla binary:")
        assert "coral-ebpf beyla install" in status["diagnosis"]["fix"]
        quiet_period(1.0)
        after = supervisor.status()
        assert (after["state"], after["restarts"], after["starts"], after["pid"]) == ("failed", 0, 0, None)
        assert [entry["state"] for entry in supervisor.history()] == ["starting", "failed"]
        # The arbiter was told, once, and fell back to the built-in engine saying why.
        assert [change.state for change in fallback.changes] == [PartState.STARTING, PartState.FAILED]
        assert len(fallback.builtin_reasons) == 1
        assert fallback.builtin_reasons[0].startswith("Beyla is failed (not a Beyla binary:")
        assert fallback.arbiter.engine == Engine.BCC
    finally:
        supervisor.stop(10)


def test_a_binary_replaced_by_something_else_fails_at_the_next_start(
    tmp_path: Path, bindir: Path, service: ServiceEntry
) -> None:
    binary = install_standin(bindir, {"crash": {"times": 2}})  # the version probe, then a crash
    supervisor = BeylaSupervisor(
        settings_for(tmp_path / "state", binary, restart={"backoff_initial": "1s", "backoff_max": "1s"}),
        otlp_endpoint="http://127.0.0.1:9",
        services=[service],
    )
    fallback = Fallback(supervisor)
    supervisor.start()
    try:
        wait_for(supervisor, lambda s: s["state"] == "backoff")
        assert fallback.builtin_reasons == []  # a crash that will be retried is no reason to fall back
        runs_before = len(runs(bindir))
        binary.unlink()
        _script(bindir, "echo hello")  # while it waits to restart, the binary becomes something else
        status = wait_for(supervisor, lambda s: s["state"] == "failed")
        assert (
            status["diagnosis"]["kind"] == "not_beyla" and "its output began: hello" in status["diagnosis"]["message"]
        )
        assert status["starts"] == 1 and len(runs(bindir)) == runs_before
        # Out of backoff into starting for the restart (never running: the tracer never came up), then failed;
        # only the failure makes the arbiter fall back.
        states = [change.state for change in fallback.changes]
        assert PartState.RUNNING not in states
        assert states[-3:] == [PartState.BACKOFF, PartState.STARTING, PartState.FAILED]
        assert len(fallback.builtin_reasons) == 1 and "not a Beyla binary" in fallback.builtin_reasons[0]
    finally:
        supervisor.stop(10)
