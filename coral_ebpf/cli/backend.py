"""`AgentBackend`: the MCP server's and `coral-ebpf ui`'s answers, from the running agent's control
socket when it answers, else from the database file read-only (what `coral-ebpf query` does)."""

from __future__ import annotations

from typing import Any

from coral_ebpf.agent.config import AgentConfig
from coral_ebpf.agent.control_client import ControlClient
from coral_ebpf.cli.query import execute  # the one executor `coral-ebpf query` uses
from coral_ebpf.errors import AgentNotRunningError


class AgentBackend:
    """Queries through a running agent when its control socket answers, else on the file read-only."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config

    def query(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
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
