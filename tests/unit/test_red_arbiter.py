"""The RED arbiter: the start-up choice for every red.engine, and each reaction to Beyla's state changes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from coral_ebpf.beyla.settings import BeylaSettings
from coral_ebpf.beyla.supervisor import BeylaSupervisor
from coral_ebpf.capabilities.report import Verdict
from coral_ebpf.red.arbiter import RedArbiter
from coral_ebpf.red.selection import Engine
from coral_ebpf.state import PartState, StateChange


class Builtin:
    """Records the built-in engine's starts; `works` says whether a start succeeds."""

    def __init__(self, works: bool = True) -> None:
        self.works = works
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> bool:
        self.reasons.append(reason)
        return self.works


def inline(work: Callable[[], None]) -> None:
    """Runs the fallback on the caller's thread, so a test sees its effect at once."""
    work()


def arbiter(setting: str, beyla_enabled: bool = True, works: bool = True) -> tuple[RedArbiter, Builtin]:
    builtin = Builtin(works)
    return RedArbiter(setting, beyla_enabled, builtin, spawn=inline), builtin


def beyla(state: PartState, reason: str = "") -> StateChange:
    return StateChange("beyla", state, reason)


# (red.engine, beyla.enabled, Beyla can run, binary found) -> (engine, start Beyla, start built-in now,
# why Beyla is off, words in the built-in engine's standby reason)
PLANS = [
    (("bcc", True, True, True), (Engine.BCC, False, True, "red.engine is bcc", "")),
    (("auto", False, True, True), (Engine.BCC, False, True, "beyla.enabled is false", "")),
    (("auto", True, False, True), (Engine.BCC, True, True, "", "")),
    (("auto", True, True, False), (Engine.BCC, True, True, "", "")),
    (("auto", True, True, True), (Engine.BEYLA, True, False, "", "starts if Beyla fails")),
    (("beyla", True, False, False), (Engine.BEYLA, True, False, "", "stays off")),
]


@pytest.mark.parametrize(("given", "expected"), PLANS)
def test_start_up_plan(given: tuple[str, bool, bool, bool], expected: tuple[Engine, bool, bool, str, str]) -> None:
    setting, enabled, can_run, binary = given
    engine, start_beyla, start_builtin, off, standby = expected
    arb, builtin = arbiter(setting, enabled)
    plan = arb.decide(can_run, binary)
    assert (plan.engine, plan.start_beyla, plan.start_builtin, plan.beyla_off_reason) == (
        engine,
        start_beyla,
        start_builtin,
        off,
    )
    assert standby in plan.standby_reason if standby else plan.standby_reason == ""
    assert arb.engine == engine and arb.reason == plan.reason
    assert builtin.reasons == []  # the agent starts what the plan says; the arbiter only falls back


@pytest.mark.parametrize("state", [PartState.FAILED, PartState.UNSUPPORTED])
def test_auto_falls_back_once_when_beyla_gives_up(state: PartState) -> None:
    arb, builtin = arbiter("auto")
    arb.decide(True, True)
    arb.on_beyla_state(beyla(state, "exit 1: no kprobes"))
    assert builtin.reasons == [f"Beyla is {state} (exit 1: no kprobes): using the built-in BCC probe"]
    assert arb.engine == Engine.BCC and arb.reason == builtin.reasons[0]
    arb.on_beyla_state(beyla(PartState.FAILED, "again"))
    assert len(builtin.reasons) == 1


@pytest.mark.parametrize(
    "state",
    [PartState.STARTING, PartState.RUNNING, PartState.IDLE, PartState.DEGRADED, PartState.BACKOFF, PartState.STOPPED],
)
def test_auto_waits_while_beyla_may_still_serve(state: PartState) -> None:
    arb, builtin = arbiter("auto")
    arb.decide(True, True)
    arb.on_beyla_state(beyla(state, "whatever"))
    assert builtin.reasons == [] and arb.engine == Engine.BEYLA


def test_a_failed_fallback_keeps_beyla_as_the_engine_and_does_not_retry() -> None:
    arb, builtin = arbiter("auto", works=False)
    arb.decide(True, True)
    arb.on_beyla_state(beyla(PartState.FAILED, "crash"))
    arb.on_beyla_state(beyla(PartState.FAILED, "crash"))
    assert len(builtin.reasons) == 1 and arb.engine == Engine.BEYLA


def test_red_engine_beyla_never_falls_back() -> None:
    arb, builtin = arbiter("beyla")
    arb.decide(True, True)
    arb.on_beyla_state(beyla(PartState.FAILED, "crash"))
    assert builtin.reasons == [] and arb.engine == Engine.BEYLA


def test_no_fallback_when_the_builtin_engine_already_serves() -> None:
    arb, builtin = arbiter("auto")
    arb.decide(False, True)  # Beyla cannot run: built-in now, Beyla still started (and becomes unsupported)
    arb.builtin_started("Beyla cannot run")
    arb.on_beyla_state(beyla(PartState.UNSUPPORTED, "no BTF"))
    assert builtin.reasons == []


def test_no_fallback_after_stop() -> None:
    arb, builtin = arbiter("auto")
    arb.decide(True, True)
    arb.stop(1.0)
    arb.on_beyla_state(beyla(PartState.FAILED, "killed at shutdown"))
    assert builtin.reasons == []


def test_stop_waits_for_a_fallback_still_starting() -> None:
    started, release = threading.Event(), threading.Event()

    def slow_builtin(reason: str) -> bool:
        started.set()
        release.wait(5)
        return True

    arb = RedArbiter("auto", True, slow_builtin)  # the real thread spawner
    arb.decide(True, True)
    arb.on_beyla_state(beyla(PartState.FAILED, "crash"))
    assert started.wait(5)
    stopper = threading.Thread(target=arb.stop, args=(5.0,))
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive()  # still waiting for the engine that is starting
    release.set()
    stopper.join(5)
    assert not stopper.is_alive() and arb.engine == Engine.BCC


def test_the_supervisor_tells_its_listeners_each_state_change(tmp_path: Path) -> None:
    seen: list[StateChange] = []
    settings = replace(BeylaSettings(), state_dir=tmp_path)
    unsupported = BeylaSupervisor(
        settings, otlp_endpoint="http://127.0.0.1:4318", probe=Verdict(False, "no kprobes", "enable them")
    )
    unsupported.subscribe(seen.append)
    unsupported.start()
    disabled = BeylaSupervisor(replace(settings, enabled=False), otlp_endpoint="http://127.0.0.1:4318")
    disabled.subscribe(seen.append)
    disabled.start()
    assert seen == [
        StateChange("beyla", PartState.UNSUPPORTED, "no kprobes"),
        StateChange("beyla", PartState.DISABLED, "beyla.enabled is false"),
    ]


def test_the_arbiter_falls_back_on_a_real_supervisor_giving_up(tmp_path: Path) -> None:
    arb, builtin = arbiter("auto")
    arb.decide(True, True)
    settings = replace(BeylaSettings(), state_dir=tmp_path, binary=tmp_path / "no-such-beyla")
    supervisor = BeylaSupervisor(settings, otlp_endpoint="http://127.0.0.1:4318", environ={})
    supervisor.subscribe(arb.on_beyla_state)
    supervisor.start()  # the binary is missing: failed, with that diagnosis
    assert supervisor.status()["state"] == PartState.FAILED
    assert len(builtin.reasons) == 1 and builtin.reasons[0].startswith("Beyla is failed (")
    assert "no-such-beyla" in builtin.reasons[0]
