"""Where the answers come from: what the MCP tools and the web view need of the agent or the colony.

`Backend` is `query(kind, params)` (the same query executor `coral-ebpf query` uses) and
`status()` (what `coral-ebpf status --json` prints). Inside the agent that is `InAgentBackend`;
from the command line it is `coral_ebpf.cli.backend.AgentBackend` (the control socket, else the
database file read-only).

`FleetBackend` is a `Backend` over a colony's store (`coral_ebpf.colony.backend.ColonyBackend`):
the same query kinds answered for every agent the colony polls (each answer names its agents),
plus `agents()`, the colony's view of each agent as an `AgentView`. The tools and the pages
ask `isinstance(backend, FleetBackend)` to offer what only a colony has (an agent filter, the
agents list); this module defines the interface so `ask` and `ui` never import the colony.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable


class Backend(Protocol):
    def query(self, kind: str, params: dict[str, Any]) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...


class AgentState(enum.StrEnum):
    """How a colony sees one agent, from its polls."""

    UP = "up"  # the last poll succeeded
    FAILING = "failing"  # answered before, the latest polls failed
    UNREACHABLE = "unreachable"  # polled, never answered
    PENDING = "pending"  # configured, not polled yet


@dataclass(frozen=True)
class AgentView:
    """One agent as the colony sees it: identity, state, when it last answered, how far behind."""

    agent_id: str
    address: str | None
    state: AgentState
    last_seen: float | None  # unix seconds of the last successful poll
    seconds_since_seen: float | None
    lag_rows: int | None  # rows the agent holds that the colony has not copied yet
    rows_stored: int
    consecutive_failures: int
    last_error: str | None
    session_id: str | None
    open_gaps: int

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["state"] = self.state.value
        return document


@runtime_checkable
class FleetBackend(Backend, Protocol):
    def agents(self) -> list[AgentView]: ...


class InAgentBackend:
    """Inside the agent: its query executor and its own status (what the control socket serves)."""

    def __init__(
        self, execute: Callable[[str, dict[str, Any]], dict[str, Any]], status: Callable[[], dict[str, Any]]
    ) -> None:
        self._execute = execute
        self._status = status

    def query(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._execute(kind, params)

    def status(self) -> dict[str, Any]:
        document = self._status()
        document.setdefault("agent", {})["running"] = True
        return document
