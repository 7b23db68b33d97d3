"""How the supervisor reads one running Beyla: restart it, call it degraded, running, or still starting.

A pure function of what the instance's threads observed, so the policy can be read (and tested)
in one place:

- `running` means Beyla can see requests: its tracer is live (the INFO line `Launching p.Tracer`,
  15-20 s after /healthz answers under TCG; requests before it are lost) or data from it reached the
  agent. Until then the state stays `starting`, and the reason says what it waits for.
- /healthz (v3.20+) must also answer 200; after the start-up grace a failure makes the state
  `degraded`, and `health.failures` failures in a row restart Beyla (Alloy's watchdog does the
  same: 20 s grace, then 5 failed probes).
- Without /healthz (releases before v3.20): the tracer line, data, or having stayed up past the
  grace time.
- Whatever the health check says, `Unable to load eBPF watcher for process events` means Beyla
  runs but discovers nothing: `degraded` with that diagnosis.
"""

from __future__ import annotations

from dataclasses import dataclass

from coral_ebpf.beyla.diagnosis import WATCHER_FIX, Diagnosis, diagnose_line
from coral_ebpf.beyla.instance import Observations
from coral_ebpf.beyla.settings import HealthSettings
from coral_ebpf.capabilities.report import Verdict

WAITING_FOR_TRACER = (
    "waiting for Beyla's tracer (its 'Launching p.Tracer' line) or the first data from an instrumented process"
)


@dataclass(frozen=True)
class Assessment:
    verdict: str  # restart | degraded | running | starting
    reason: str
    diagnosis: Diagnosis | None = None
    healthy: bool = False  # counts towards the healthy period that resets the back-off


def assess(
    seen: Observations,
    *,
    age: float,
    has_healthz: bool,
    health: HealthSettings,
    data_arrived: bool,
    probe: Verdict | None = None,
) -> Assessment:
    if has_healthz and seen.health_failures >= health.failures and age >= health.grace:
        detail = seen.last_health.detail if seen.last_health else "no answer"
        return Assessment("restart", f"/healthz failed {seen.health_failures} times in a row: {detail}")
    if seen.watcher_failure is not None:
        line = seen.watcher_failure
        diagnosis = diagnose_line(line) or Diagnosis("discovery_dead", line.message, WATCHER_FIX, True)
        if probe is not None and not probe.ok:
            diagnosis = Diagnosis(
                diagnosis.kind,
                diagnosis.message,
                f"{diagnosis.fix} (the probe said: {probe.reason})",
                diagnosis.retryable,
                diagnosis.line,
            )
        return Assessment("degraded", diagnosis.message, diagnosis, healthy=True)
    live = "tracer live" if seen.tracer_live else "data arriving" if data_arrived else None
    if has_healthz:
        if seen.health_ok_ever and seen.health_failures == 0:
            if live is not None:
                return Assessment("running", f"/healthz ok, {live}", healthy=True)
            return Assessment("starting", f"{WAITING_FOR_TRACER} (/healthz ok)", healthy=True)
        if seen.health_ok_ever and age >= health.grace:
            detail = seen.last_health.detail if seen.last_health else "/healthz failing"
            return Assessment("degraded", detail, Diagnosis("unhealthy", detail, "", True))
        return Assessment("starting", "waiting for /healthz")
    if live is not None:
        return Assessment("running", live, healthy=True)
    if age >= health.grace:
        return Assessment("running", "alive past the grace time", healthy=True)
    return Assessment("starting", WAITING_FOR_TRACER)
