"""The agent's parts and its status document: typed here, turned into JSON only at the control socket.

`Part` is the one list of the agent's parts, in start order (`coral-ebpf status` shows them in it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from coral_ebpf.state import PartState


class Part(StrEnum):
    PROBE = "probe"
    STORAGE = "storage"
    EXPORT = "export"
    TRANSFORM = "transform"
    RECEIVER = "receiver"
    DISCOVERY = "discovery"
    RED = "red"
    BEYLA = "beyla"
    CONTROL = "control"
    COLONY_API = "colony_api"
    TELEMETRY = "telemetry"


@dataclass(frozen=True)
class PartStatus:
    """One part's state, since when, why, and the counters its component reports (`details`).

    A running component's own `state` (e.g. Beyla's `backoff`) is more precise than the agent's
    and wins in the JSON.
    """

    state: PartState
    since: float
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document = dict(self.details)
        document.setdefault("state", self.state)
        document.setdefault("since", self.since)
        if self.reason:
            document.setdefault("reason", self.reason)
        return document


@dataclass(frozen=True)
class AgentInfo:
    version: str
    pid: int
    state: PartState  # the agent's own: starting (parts still being started), running, stopping
    agent_id: str
    started: float
    config: str
    state_dir: str
    red_engine: str
    red_engine_reason: str
    memory: dict[str, Any] | None = None  # the memory budget's figures (RSS, idle, peak, budget)
    last_reload: dict[str, Any] | None = None  # when the config was last re-read (SIGHUP), what applied

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["uptime_s"] = round(time.time() - self.started, 1)
        if self.memory is None:
            del document["memory"]
        return document


@dataclass(frozen=True)
class StatusDocument:
    """What `GET /v1/status` answers: the agent, then every part in start order."""

    agent: AgentInfo
    parts: Mapping[Part, PartStatus]

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"agent": self.agent.to_json()}
        for part in Part:
            if part in self.parts:
                document[part.value] = self.parts[part].to_json()
        return document
