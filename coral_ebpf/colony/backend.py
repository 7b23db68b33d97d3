"""`ColonyBackend`: the MCP tools' and the web view's answers from a colony's store.

The same query kinds as an agent's (`colony.queries.fleet_query`, what `coral-ebpf query --colony`
prints), and the colony's status; `agents()` turns the status document's per-agent poll state
into `AgentView`s. Inside the colony `execute` and `status` are its own executor and status;
from the command line they go through its control socket, or read its database file while it
is stopped (`coral_ebpf.cli.backend.colony_backend`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from coral_ebpf.ask.backend import AgentState, AgentView


def agent_state(agent: Mapping[str, Any]) -> AgentState:
    """UP after a successful last poll; FAILING once it answered but fails now; else UNREACHABLE or PENDING."""
    if agent.get("consecutive_failures"):
        return AgentState.FAILING if agent.get("last_success") else AgentState.UNREACHABLE
    return AgentState.UP if agent.get("last_success") else AgentState.PENDING


def agent_views(document: Mapping[str, Any], now: float | None = None) -> list[AgentView]:
    """Every agent of a colony status document, configured ones not polled yet included (PENDING)."""
    now = time.time() if now is None else now
    known = {agent["agent_id"]: agent for agent in document.get("agents", [])}
    for agent_id in document.get("colony", {}).get("agents_configured", []):
        known.setdefault(agent_id, {"agent_id": agent_id})
    views = []
    for agent_id, agent in sorted(known.items()):
        seen = agent.get("last_success")
        views.append(
            AgentView(
                agent_id=agent_id,
                address=agent.get("address"),
                state=agent_state(agent),
                last_seen=seen,
                seconds_since_seen=None if seen is None else round(max(0.0, now - seen), 3),
                lag_rows=agent.get("lag_rows"),
                rows_stored=int(agent.get("rows_stored") or 0),
                consecutive_failures=int(agent.get("consecutive_failures") or 0),
                last_error=agent.get("last_error"),
                session_id=agent.get("session_id"),
                open_gaps=int(agent.get("gaps", {}).get("open", 0)),
            )
        )
    return views


class ColonyBackend:
    """A `FleetBackend` over a colony's fleet executor and status document."""

    def __init__(
        self, execute: Callable[[str, dict[str, Any]], dict[str, Any]], status: Callable[[], dict[str, Any]]
    ) -> None:
        self._execute = execute
        self._status = status

    def query(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._execute(kind, params)

    def status(self) -> dict[str, Any]:
        return self._status()

    def agents(self) -> list[AgentView]:
        return agent_views(self._status())
