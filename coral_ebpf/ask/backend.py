"""Where the answers come from: the running agent's control socket, else the database file read-only.

`Backend` is what the MCP tools (and the web view) need: `query(kind, params)` (the same query
executor `coral-ebpf query` uses) and `status()` (what `coral-ebpf status --json` prints).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from coral_ebpf.agent.control_client import ControlClient
from coral_ebpf.config import AgentConfig
from coral_ebpf.errors import AgentNotRunningError


class Backend(Protocol):
    def query(self, kind: str, params: dict[str, Any]) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...


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


class AgentBackend:
    """Queries through a running agent when its control socket answers, else on the file read-only."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config

    def query(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        from coral_ebpf.cli.query import execute  # the one executor `coral-ebpf query` uses

        return execute(self.config, kind, params)

    def status(self) -> dict[str, Any]:
        try:
            document: dict[str, Any] = ControlClient(self.config.control.socket).status()
        except AgentNotRunningError as exc:
            return {
                "agent": {"running": False, "error": exc.message, "hint": exc.hint},
                "storage": {"path": str(self.config.storage.path)},
            }
        document.setdefault("agent", {})["running"] = True
        return document
