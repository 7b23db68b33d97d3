"""The one vocabulary for the state of a part of the agent, shared by every part and by `status`.

A `StrEnum`, so a state compares equal to its name and is written to JSON as that name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class PartState(StrEnum):
    PENDING = "pending"  # the agent has not come to it yet
    CREATED = "created"  # built, not started
    STARTING = "starting"
    RUNNING = "running"  # doing its work (a listener serving, a probe attached, Beyla healthy)
    IDLE = "idle"  # running, with nothing to do yet (Beyla: no service to instrument)
    DEGRADED = "degraded"  # running, but something is wrong (the reason says what)
    BACKOFF = "backoff"  # waiting to restart after a failure
    STANDBY = "standby"  # ready to take over (the built-in RED engine while Beyla serves)
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"  # gave up; the reason (and a diagnosis where there is one) says why
    DISABLED = "disabled"  # turned off in the configuration
    UNSUPPORTED = "unsupported"  # the capability probe says it cannot work here
    OK = "ok"  # the capability probe: every check ran
    INCOMPLETE = "incomplete"  # the capability probe: some checks could not run (not root)


# States in which a part holds resources that stop() must release.
ACTIVE_STATES = frozenset({PartState.RUNNING, PartState.FAILED})
# States in which a part is healthy enough that its reason is not worth showing.
HEALTHY_STATES = frozenset({PartState.RUNNING, PartState.OK})


@dataclass(frozen=True)
class StateChange:
    """A part moved to `state`; what observers of a part (e.g. the RED arbiter watching Beyla) receive."""

    part: str
    state: PartState
    reason: str = ""


StateListener = Callable[[StateChange], None]
