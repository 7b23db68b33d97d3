"""How the supervisor reads one running Beyla: restart it, call it degraded, running, or still starting.

A pure function of what the instance's threads observed, so the policy can be read (and tested)
in one place:

- /healthz (v3.20+): `running` after its first 200; after the start-up grace a failure makes the
  state `degraded`, and `health.failures` failures in a row restart Beyla (Alloy's watchdog does
  the same: 20 s grace, then 5 failed probes).
- Without /healthz: `running` once Beyla logs `instrumenting process`, once its OTLP data reaches
  the agent, or once it has stayed up past the grace time.
- Whatever the health check says, `Unable to load eBPF watcher for process events` means Beyla
  runs but discovers nothing: `degraded` with that diagnosis.
"""

from __future__ import annotations

from dataclasses import dataclass

from coral_ebpf.beyla.diagnosis import WATCHER_FIX, Diagnosis, diagnose_line
from coral_ebpf.beyla.instance import Observations
from coral_ebpf.beyla.settings import HealthSettings
from coral_ebpf.capabilities.report import Verdict


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
                diagnosis.kind, diagnosis.message, f"{diagnosis.fix} (the probe said: {probe.reason})",
                diagnosis.retryable, diagnosis.line,
            )
        return Assessment("degraded", diagnosis.message, diagnosis, healthy=True)
    if has_healthz:
        if seen.health_ok_ever and seen.health_failures == 0:
            return Assessment("running", "/healthz ok", healthy=True)
        if seen.health_ok_ever and age >= health.grace:
            detail = seen.last_health.detail if seen.last_health else "/healthz failing"
            return Assessment("degraded", detail, Diagnosis("unhealthy", detail, "", True))
        return Assessment("starting", "waiting for /healthz")
    if seen.instrumented:
        return Assessment("running", "instrumenting", healthy=True)
    if data_arrived:
        return Assessment("running", "data arriving", healthy=True)
    if age >= health.grace:
        return Assessment("running", "alive past the grace time", healthy=True)
    return Assessment("starting", "waiting for Beyla to instrument or send data")
