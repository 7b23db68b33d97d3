"""The restart policy and the health assessment, as pure functions of what was observed."""

from __future__ import annotations

from coral_ebpf.beyla.diagnosis import Diagnosis
from coral_ebpf.beyla.health import HealthResult
from coral_ebpf.beyla.health_policy import WAITING_FOR_TRACER, assess
from coral_ebpf.beyla.instance import Observations
from coral_ebpf.beyla.instrumented import instrumented_pids
from coral_ebpf.beyla.logparse import parse_line
from coral_ebpf.beyla.restart_policy import RestartPolicy
from coral_ebpf.beyla.settings import HealthSettings, RestartSettings
from coral_ebpf.capabilities.report import Verdict
from coral_ebpf.discovery.model import ServiceEntry

CRASH = Diagnosis("crash", "panic", "", True)
HEALTH = HealthSettings(grace=20, interval=10, timeout=5, failures=5)


def test_backoff_doubles_to_the_cap_then_gives_up() -> None:
    policy = RestartPolicy(RestartSettings(backoff_initial=1, backoff_max=30, healthy_reset=30, max_restarts=10))
    delays = [policy.failed(CRASH).delay for _ in range(10)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]
    final = policy.failed(CRASH)
    assert final.action == "fail" and final.diagnosis is not None
    assert final.diagnosis.message == "gave up after 10 restarts in a row; last: panic"
    assert final.diagnosis.retryable is False


def test_a_failure_retrying_cannot_fix_fails_at_once() -> None:
    policy = RestartPolicy(RestartSettings())
    kernel = Diagnosis("kernel_too_old", "kernel 4.14", "upgrade", False)
    assert policy.failed(kernel).action == "fail" and policy.consecutive_failures == 0


def test_a_healthy_period_resets_the_count_and_a_short_one_does_not() -> None:
    policy = RestartPolicy(RestartSettings(backoff_initial=1, backoff_max=30, healthy_reset=30, max_restarts=10))
    policy.failed(CRASH)
    policy.failed(CRASH)
    policy.started()
    policy.healthy(100.0)
    policy.healthy(129.0)
    assert policy.consecutive_failures == 2
    assert policy.failed(CRASH).delay == 4  # not healthy long enough: the back-off continues
    policy.started()
    policy.healthy(200.0)
    policy.healthy(230.0)
    assert policy.consecutive_failures == 0
    assert policy.failed(CRASH).delay == 1


def test_healthz_and_the_tracer_decide_when_beyla_has_healthz() -> None:
    seen = Observations()
    assert assess(seen, age=1, has_healthz=True, health=HEALTH, data_arrived=True).verdict == "starting"
    seen.health_ok_ever, seen.last_health = True, HealthResult(True, "ok")
    waiting = assess(seen, age=1, has_healthz=True, health=HEALTH, data_arrived=False)
    assert (waiting.verdict, waiting.healthy) == ("starting", True)
    assert waiting.reason == f"{WAITING_FOR_TRACER} (/healthz ok)"
    with_data = assess(seen, age=1, has_healthz=True, health=HEALTH, data_arrived=True)
    assert with_data.reason == "/healthz ok, data arriving"
    # Past the grace time still `starting`: without the tracer Beyla sees no request.
    assert assess(seen, age=300, has_healthz=True, health=HEALTH, data_arrived=False).verdict == "starting"
    seen.tracer_live = True
    running = assess(seen, age=1, has_healthz=True, health=HEALTH, data_arrived=False)
    assert (running.verdict, running.reason) == ("running", "/healthz ok, tracer live")
    seen.health_failures, seen.last_health = 2, HealthResult(False, "answered 503")
    degraded = assess(seen, age=30, has_healthz=True, health=HEALTH, data_arrived=False)
    assert (degraded.verdict, degraded.reason, degraded.healthy) == ("degraded", "answered 503", False)
    seen.health_failures = 5
    assert assess(seen, age=30, has_healthz=True, health=HEALTH, data_arrived=False).verdict == "restart"
    assert assess(seen, age=10, has_healthz=True, health=HEALTH, data_arrived=False).verdict != "restart"


def test_without_healthz_the_tracer_data_or_time_decide() -> None:
    seen = Observations()
    starting = assess(seen, age=1, has_healthz=False, health=HEALTH, data_arrived=False)
    assert (starting.verdict, starting.reason) == ("starting", WAITING_FOR_TRACER)
    assert assess(seen, age=1, has_healthz=False, health=HEALTH, data_arrived=True).reason == "data arriving"
    assert assess(seen, age=21, has_healthz=False, health=HEALTH, data_arrived=False).reason == (
        "alive past the grace time"
    )
    seen.instrumented_executables.add("/usr/bin/python3")  # instrumenting is not yet seeing
    assert assess(seen, age=1, has_healthz=False, health=HEALTH, data_arrived=False).verdict == "starting"
    seen.tracer_live = True
    assert assess(seen, age=1, has_healthz=False, health=HEALTH, data_arrived=False).reason == "tracer live"


def test_instrumented_processes_are_counted_by_pid() -> None:
    def entry(pid: int, exe: str) -> ServiceEntry:
        return ServiceEntry(pid=pid, netns=0, name="s", exe=exe, cmdline=(), listeners=())

    services = [entry(10, "/usr/bin/python3.11"), entry(11, "/usr/bin/python3.11"), entry(12, "/usr/bin/node")]
    # One line for the executable (pid 10), yet both python processes are traced.
    assert instrumented_pids({"/usr/bin/python3.11"}, {10}, services) == {10, 11}
    assert instrumented_pids(set(), {99}, services) == {99}  # a pid discovery does not know still counts
    assert instrumented_pids(set(), set(), [entry(13, "")]) == set()
    # The agent and Beyla run Python too (the stand-in does), but they are not in Beyla's config.
    assert instrumented_pids({"/usr/bin/python3.11"}, {10}, services, excluded={11}) == {10}


def test_dead_discovery_wins_over_a_healthy_healthz() -> None:
    seen = Observations(health_ok_ever=True, last_health=HealthResult(True, "ok"))
    seen.watcher_failure = parse_line(
        '{"level":"ERROR","msg":"Unable to load eBPF watcher for process events",'
        '"error":"attaching kprobe: not supported"}'
    )
    verdict = Verdict(False, "no kprobes on this kernel", "red.engine: bcc")
    result = assess(seen, age=1, has_healthz=True, health=HEALTH, data_arrived=False, probe=verdict)
    assert result.verdict == "degraded" and result.diagnosis is not None
    assert result.diagnosis.kind == "discovery_dead" and "(the probe said: no kprobes on this kernel)" in (
        result.diagnosis.fix
    )
