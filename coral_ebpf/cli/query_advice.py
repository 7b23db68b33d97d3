"""Why a query found nothing, said from what the agent knows: which engine serves the protocol here,
whether it can run, and the export intervals actually in use.

`Situation` is gathered once per query (the running agent's status when it answers, the
configuration for the intervals); `engine_advice` turns it into the lines printed under an empty
result. Only the built-in engine's HTTP and Beyla's HTTP/gRPC/SQL/messaging are measured here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coral_ebpf.agent.config import AgentConfig
from coral_ebpf.units import format_duration

_TITLES = {"http": "HTTP", "grpc": "gRPC", "sql": "SQL", "messaging": "Messaging", "traces": "Traces"}
# Beyla states in which it measures nothing and will not by itself.
_BEYLA_OUT = frozenset({"unsupported", "disabled", "failed"})


@dataclass(frozen=True)
class Situation:
    agent_running: bool
    beyla_state: str | None  # None: no agent answered
    beyla_why: str  # the diagnosis (or reason) when Beyla does not run
    builtin_state: str | None  # the built-in RED engine's part state
    beyla_metrics_interval: float
    beyla_traces_timeout: float
    builtin_export_interval: float

    @classmethod
    def gather(cls, config: AgentConfig, status: Mapping[str, Any] | None) -> Situation:
        beyla = (status or {}).get("beyla") or {}
        red = (status or {}).get("red") or {}
        diagnosis = beyla.get("diagnosis") if isinstance(beyla.get("diagnosis"), dict) else {}
        why = str((diagnosis or {}).get("message") or beyla.get("reason") or "")
        return cls(
            agent_running=status is not None,
            beyla_state=beyla.get("state") if status is not None else None,
            beyla_why=" ".join(why.split()),
            builtin_state=red.get("state") if status is not None else None,
            beyla_metrics_interval=config.beyla.metrics_interval,
            beyla_traces_timeout=config.beyla.traces_batch_timeout,
            builtin_export_interval=config.red.export_interval,
        )


def _every(seconds: float) -> str:
    return format_duration(seconds)


def engine_advice(kind: str, situation: Situation) -> list[str]:
    """Lines saying which engine would have measured `kind` and what it can see now."""
    title = _TITLES.get(kind, kind)
    if not situation.agent_running:
        return [
            "No agent answers on the control socket, so nothing new is being measured: this is what was "
            "stored while it ran. Start it with 'coral-ebpf start' (or check 'coral-ebpf status')."
        ]
    beyla_out = situation.beyla_state in _BEYLA_OUT
    builtin_runs = situation.builtin_state == "running"
    if kind == "http" and builtin_runs:
        return [
            f"HTTP is measured here by the built-in engine (Beyla: {situation.beyla_state}); it hands on its "
            f"figures every {_every(situation.builtin_export_interval)}, so new traffic shows after that."
        ]
    if kind == "traces" and builtin_runs and beyla_out:
        return [
            "Spans come from the built-in engine here (HTTP server spans only; Beyla: "
            f"{situation.beyla_state}); it hands them on every {_every(situation.builtin_export_interval)}."
        ]
    if beyla_out:
        why = f": {situation.beyla_why}" if situation.beyla_why else ""
        verb = "is disabled" if situation.beyla_state == "disabled" else "cannot run here"
        if situation.beyla_state == "failed":
            verb = "has stopped (failed)"
        need = "Traces need" if kind == "traces" else f"{title} needs"
        return [f"{need} Beyla, which {verb}{why}"]
    if kind == "traces":
        return [
            f"Beyla ({situation.beyla_state}) sends spans within {_every(situation.beyla_traces_timeout)} "
            "of a request ending."
        ]
    return [
        f"{title} is measured by Beyla ({situation.beyla_state}), which exports metrics every "
        f"{_every(situation.beyla_metrics_interval)}: new traffic shows after that."
    ]
