"""BeylaSupervisor with the Beyla stand-in: states, health, diagnoses and the restart policy."""

from __future__ import annotations

import logging
import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from coral_ebpf.beyla.supervisor import BeylaSupervisor
from coral_ebpf.capabilities.report import Feature, ProbeComponent, ProbeReport, Verdict
from coral_ebpf.discovery.model import Listener, ServiceEntry
from tests.beyla_standin import install_standin, runs
from tests.helpers.processes import free_port
from tests.helpers.timing import quiet_period
from tests.integration.beyla_support import http_service, settings_for, states, wait_for

STATUS_FIELDS = {
    "state",
    "since",
    "restarts",
    "last_exit_code",
    "diagnosis",
    "version",
    "binary",
    "config_path",
    "pid",
    "rss_bytes",
    "health",
    "probe_warning",
}


@pytest.fixture
def service() -> Iterator[ServiceEntry]:
    with http_service() as entry:
        yield entry


@pytest.fixture
def supervisors() -> Iterator[list[BeylaSupervisor]]:
    created: list[BeylaSupervisor] = []
    yield created
    for supervisor in created:
        supervisor.stop(15)


@pytest.fixture
def make(tmp_path: Path, supervisors: list[BeylaSupervisor], service: ServiceEntry) -> Any:
    def build(
        control: dict[str, Any] | None = None,
        services: list[ServiceEntry] | None = None,
        probe: ProbeReport | Verdict | None = None,
        last_data_seen: Any = None,
        **beyla: Any,
    ) -> tuple[BeylaSupervisor, Path]:
        binary = install_standin(tmp_path / "bin", control or {})
        settings = settings_for(tmp_path / "state", binary, **beyla)
        supervisor = BeylaSupervisor(
            settings,
            otlp_endpoint="http://127.0.0.1:9",  # nothing listens: export is not what these tests check
            probe=probe,
            services=[service] if services is None else services,
            last_data_seen=last_data_seen,
            agent_ports=(4317, 4318),
        )
        supervisors.append(supervisor)
        return supervisor, binary.parent

    return build


def test_starts_healthy_with_a_clean_environment_and_full_status(
    make: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "would-rename-everything")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://elsewhere:4318")
    monkeypatch.setenv("BEYLA_OPEN_PORT", "1-65535")
    caplog.set_level(logging.INFO, logger="coral_ebpf.beyla")
    supervisor, bindir = make()
    supervisor.start()
    status = wait_for(supervisor, lambda s: s["state"] == "running" and s["health"]["instrumented_processes"] == 1)
    assert set(status) >= STATUS_FIELDS
    assert (status["version"], status["dialect"], status["restarts"], status["diagnosis"]) == (
        "v3.35.0",
        "v3.20",
        0,
        None,
    )
    assert status["health"]["source"] == "healthz" and status["health"]["ok"] is True
    assert status["rss_bytes"] > 0 and status["probe_warning"] is None
    assert status["services"] == 1 and status["skipped_services"] == []
    run = runs(bindir)[-1]  # runs[0] was the version probe
    assert run["pid"] == status["pid"] and run["pgid"] == status["pid"]  # its own process group
    assert run["argv"] == ["-config", status["config_path"]]
    assert set(run["env"]) == {"PATH", "HOME", "LANG", "BEYLA_LOG_FORMAT", "GOMEMLIMIT"}
    assert run["env"]["GOMEMLIMIT"] == str(512 * 1024 * 1024)
    config = Path(status["config_path"])
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    document = yaml.safe_load(config.read_text())
    assert document["health_check"]["port"] == status["health"]["port"]
    relayed = [r for r in caplog.records if r.name == "coral_ebpf.beyla.child"]
    assert relayed and all(r.fields["source"] == "beyla" for r in relayed)  # type: ignore[attr-defined]
    assert "instrumenting process" in [r.getMessage() for r in relayed]


def test_a_release_without_healthz_is_running_once_its_tracer_is_live(make: Any) -> None:
    supervisor, _ = make({"version": "v3.10.0"})
    supervisor.start()
    status = wait_for(supervisor, lambda s: s["state"] == "running")
    assert status["dialect"] == "v3" and status["health"]["source"] == "logs and data"
    assert "health_check" not in yaml.safe_load(Path(status["config_path"]).read_text())
    assert supervisor.history()[-1]["reason"] == "tracer live" and status["health"]["tracer_live"]


def test_a_legacy_release_refuses_what_it_cannot_carry(make: Any) -> None:
    supervisor, _ = make({"version": "v2.2.4"}, traces_batch_timeout="200ms")
    supervisor.start()
    status = wait_for(supervisor, lambda s: s["state"] == "failed")
    assert status["diagnosis"]["kind"] == "configuration" and status["pid"] is None
    assert status["diagnosis"]["message"].startswith("beyla.traces_batch_timeout: Beyla v2.2.4 predates v2.5")


def test_a_legacy_release_gets_top_level_open_port(make: Any, service: ServiceEntry) -> None:
    supervisor, _ = make({"version": "v2.2.4"}, traces_batch_timeout="1s")
    supervisor.start()
    status = wait_for(supervisor, lambda s: s["state"] == "running")
    document = yaml.safe_load(Path(status["config_path"]).read_text())
    assert status["dialect"] == "legacy" and document["open_port"] == str(service.ports[0])


def test_data_arriving_counts_as_running_when_nothing_else_says_so(make: Any, service: ServiceEntry) -> None:
    seen: list[float] = []
    # A port nobody listens on: the stand-in instruments nothing, so no 'instrumenting' line either.
    quiet = ServiceEntry(
        pid=service.pid, netns=0, name="x", exe=service.exe, cmdline=(), listeners=(Listener(free_port()),)
    )
    supervisor, _ = make(
        {"version": "v3.10.0"},
        services=[quiet],
        last_data_seen=lambda: seen[-1] if seen else None,
        health={"grace": "60s"},
    )
    supervisor.start()
    wait_for(supervisor, lambda s: s["pid"] is not None)
    quiet_period(1.0)  # no data yet, so no verdict however long it runs (the grace is 60 s)
    assert supervisor.status()["state"] == "starting"
    seen.append(time.time())
    status = wait_for(supervisor, lambda s: s["state"] == "running")
    assert supervisor.history()[-1]["reason"] == "data arriving" and status["last_data_age"] is not None


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        ("kernel_too_old", "kernel_too_old"),
        ("no_btf", "no_btf"),
        ("capabilities", "capabilities"),
        ("wrong_configuration", "wrong_configuration"),
        ("memlock", "memlock"),
    ],
)
def test_fatal_errors_fail_at_once_with_a_diagnosis_and_a_fix(make: Any, failure: str, kind: str) -> None:
    supervisor, _bindir = make({"fail": failure})
    supervisor.start()
    status = wait_for(supervisor, lambda s: s["state"] == "failed")
    assert status["diagnosis"]["kind"] == kind and status["diagnosis"]["fix"]
    assert status["restarts"] == 0
    assert "backoff" not in states(supervisor)


@pytest.mark.parametrize(("failure", "kind"), [("runtime", "runtime_error"), ("port_in_use", "port_in_use")])
def test_retryable_errors_back_off_and_recover(make: Any, failure: str, kind: str) -> None:
    supervisor, _ = make({"fail": failure, "fail_times": 3})  # the version probe is start 1
    supervisor.start()
    status = wait_for(supervisor, lambda s: s["state"] == "running" and s["restarts"] == 2)
    backoffs = [e for e in supervisor.history() if e["state"] == "backoff"]
    assert len(backoffs) == 2 and status["restarts"] == 2
    assert status["last_exit_code"] == 255
    assert [e["kind"] for e in backoffs] == [kind, kind]


def test_crash_loop_backs_off_exponentially_then_fails(make: Any) -> None:
    supervisor, _ = make({"crash": {"times": 1000}})
    supervisor.start()
    status = wait_for(supervisor, lambda s: s["state"] == "failed")
    history = supervisor.history()
    delays = [entry["delay"] for entry in history if entry["state"] == "backoff"]
    assert delays == [0.05, 0.1, 0.2, 0.4]  # 50ms doubling, capped at backoff_max 400ms
    for index, entry in enumerate(history):
        if entry["state"] == "backoff":
            restart = next(e for e in history[index + 1 :] if e["state"] in ("starting", "failed"))
            if restart["state"] == "starting":
                assert restart["t"] - entry["t"] >= entry["delay"]
    assert status["restarts"] == 4 and status["last_exit_code"] == 2
    assert status["diagnosis"]["kind"] == "crash"
    assert "gave up after 4 restarts in a row" in status["diagnosis"]["message"]
    assert status["diagnosis"]["message"].endswith(
        "panic: runtime error: invalid memory address or nil pointer dereference"
    )


def test_backoff_starts_over_after_a_healthy_period(make: Any) -> None:
    supervisor, _bindir = make({"crash": {"times": 3}})  # probe + two crashing starts
    supervisor.start()
    # (/healthz may answer before a crashing start crashes, so wait for the third start, not the first "running")
    status = wait_for(supervisor, lambda s: s["state"] == "running" and s["restarts"] == 2)
    assert [e["delay"] for e in supervisor.history() if e["state"] == "backoff"] == [0.05, 0.1]
    wait_for(supervisor, lambda s: s["consecutive_failures"] == 0)  # healthy_reset: 1s
    os.kill(status["pid"], signal.SIGKILL)
    wait_for(supervisor, lambda s: s["state"] == "running" and s["pid"] != status["pid"])
    last_backoff = [e for e in supervisor.history() if e["state"] == "backoff"][-1]
    assert last_backoff["delay"] == 0.05  # back to the initial delay
    assert supervisor.status()["diagnosis"] is None
    assert last_backoff["kind"] == "killed"
    assert last_backoff["reason"].startswith("Beyla was killed by SIGKILL from outside the agent, not by the OOM")


def test_dead_discovery_is_degraded_with_its_diagnosis(make: Any) -> None:
    supervisor, _ = make({"watcher_failure": True})
    supervisor.start()
    status = wait_for(supervisor, lambda s: s["state"] == "degraded")
    assert status["diagnosis"]["kind"] == "discovery_dead"
    assert "Unable to load eBPF watcher for process events" in status["diagnosis"]["message"]
    assert "kprobe" in status["diagnosis"]["fix"]
    assert status["pid"] is not None  # still running: degraded, not failed


def _no_kprobes() -> ProbeReport:
    return ProbeReport(
        kernel={"release": "6.18"},
        features={"kprobes": Feature(False, "CONFIG_KPROBES is not set")},
        components={
            ProbeComponent.BEYLA_APPLICATION: Verdict(
                False,
                "no kprobes: Beyla's process watcher cannot load",
                "use a kernel with CONFIG_KPROBES=y, or red.engine: bcc",
            )
        },
    )


def test_unsupported_when_the_probe_says_so_and_nothing_is_started(make: Any) -> None:
    supervisor, bindir = make(probe=_no_kprobes())
    supervisor.start()
    status = supervisor.status()
    assert status["state"] == "unsupported" and status["pid"] is None
    assert status["diagnosis"]["message"] == "no kprobes: Beyla's process watcher cannot load"
    assert "red.engine: bcc" in status["diagnosis"]["fix"]
    assert runs(bindir) == []


def test_force_start_runs_anyway_and_carries_the_probes_warning(make: Any) -> None:
    supervisor, _ = make({"watcher_failure": True}, probe=_no_kprobes(), force_start=True)
    supervisor.start()
    status = wait_for(supervisor, lambda s: s["state"] == "degraded")
    assert status["probe_warning"].startswith("no kprobes: Beyla's process watcher cannot load")
    assert "the probe said: no kprobes" in status["diagnosis"]["fix"]


def test_disabled(make: Any) -> None:
    supervisor, bindir = make(enabled=False)
    supervisor.start()
    assert supervisor.status()["state"] == "disabled" and runs(bindir) == []


def test_a_missing_binary_fails_with_the_install_hint(tmp_path: Path, supervisors: list[BeylaSupervisor]) -> None:
    settings = settings_for(tmp_path / "state", tmp_path / "missing" / "beyla")
    supervisor = BeylaSupervisor(settings, otlp_endpoint="http://127.0.0.1:9")
    supervisors.append(supervisor)
    supervisor.start()
    status = supervisor.status()
    assert status["state"] == "failed" and status["diagnosis"]["kind"] == "binary"
    assert "coral-ebpf beyla install" in status["diagnosis"]["fix"]


def test_an_unsupported_release_is_refused(make: Any) -> None:
    supervisor, _ = make({"version": "v0.4.1"})
    supervisor.start()
    status = wait_for(supervisor, lambda s: s["state"] == "failed")
    assert status["diagnosis"]["kind"] == "version" and "v0.4.1" in status["diagnosis"]["message"]


def test_idle_without_services_then_started_by_discovery(make: Any, service: ServiceEntry) -> None:
    supervisor, bindir = make(services=[])
    supervisor.start()
    wait_for(supervisor, lambda s: s["state"] == "idle")
    assert len(runs(bindir)) == 1  # only the version probe
    supervisor.update_services([service])
    status = wait_for(supervisor, lambda s: s["state"] == "running")
    assert status["services"] == 1


def test_failing_healthz_degrades_then_restarts(make: Any) -> None:
    supervisor, _ = make({"health_fail_after": 0.5}, health={"grace": "1s", "failures": 3})
    supervisor.start()
    wait_for(supervisor, lambda s: s["state"] == "degraded")
    status = wait_for(supervisor, lambda s: s["restarts"] >= 1)
    backoff = next(e for e in supervisor.history() if e["state"] == "backoff")
    assert "/healthz failed 3 times in a row" in backoff["reason"]
    assert status["last_stop"]["why"] == "unhealthy"


@pytest.mark.kernel
def test_the_real_capability_probe_decides_whether_beyla_starts(make: Any, tmp_path: Path) -> None:
    from coral_ebpf.capabilities.kernel_probe import probe

    report = probe(tmp_path / "probe-state", include_bcc=False)
    verdict = report.verdict("beyla_application")
    supervisor, bindir = make(probe=report)
    supervisor.start()
    if verdict.ok:
        wait_for(supervisor, lambda s: s["state"] == "running")
        return
    # On a kernel without kprobes (the development machines) Beyla's application mode cannot work.
    status = supervisor.status()
    assert status["state"] == "unsupported" and status["diagnosis"]["message"] == verdict.reason
    assert runs(bindir) == []


def test_backoff_says_when_the_next_restart_is(make: Any) -> None:
    supervisor, _ = make({"crash": {"times": 2}}, restart={"backoff_initial": "2s", "backoff_max": "2s"})
    supervisor.start()
    status = wait_for(supervisor, lambda s: s["state"] == "backoff")
    assert status["next_restart_in"] is not None and 0.0 < status["next_restart_in"] <= 2.0
    status = wait_for(supervisor, lambda s: s["state"] == "running")
    assert status["next_restart_in"] is None and status["restarts"] == 1
    assert "restart 1 after back-off" in [entry.get("reason") for entry in supervisor.history()]


def test_running_waits_for_the_tracer_and_starting_says_so(make: Any) -> None:
    supervisor, _ = make({"tracer_after": 6.0})
    supervisor.start()
    # /healthz answers long before the tracer; the 'instrumenting process' line may reach the supervisor's
    # log reader a little after the first good /healthz, so wait for both before looking at the state.
    status = wait_for(supervisor, lambda s: s["health"]["ok"] is True and s["health"]["instrumented_processes"] == 1)
    assert status["state"] == "starting"
    assert status["waiting_for"] == (
        "waiting for Beyla's tracer (its 'Launching p.Tracer' line) or the first data from an instrumented "
        "process (/healthz ok)"
    )
    status = wait_for(supervisor, lambda s: s["state"] == "running")
    assert status["waiting_for"] is None and status["health"]["tracer_live"] is True
    assert supervisor.history()[-1]["reason"] == "/healthz ok, tracer live"


def test_two_processes_of_one_executable_count_as_two(
    tmp_path: Path, supervisors: list[BeylaSupervisor], service: ServiceEntry
) -> None:
    with http_service() as second:
        assert second.exe == service.exe
        binary = install_standin(tmp_path / "bin", {})
        supervisor = BeylaSupervisor(
            settings_for(tmp_path / "state", binary), otlp_endpoint="http://127.0.0.1:9", services=[service, second]
        )
        supervisors.append(supervisor)
        supervisor.start()
        status = wait_for(supervisor, lambda s: s["state"] == "running")
        # The stand-in, like Beyla, logs `instrumenting process` once for the executable.
        assert sum("instrumenting process" in line for line in status["recent_lines"]) <= 1
        assert status["health"]["instrumented_processes"] == 2
