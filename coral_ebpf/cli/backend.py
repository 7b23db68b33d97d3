"""The MCP server's and `coral-ebpf ui`'s answers from the command line.

`AgentBackend`: from the running agent's control socket when it answers, else from the database
file read-only (what `coral-ebpf query` does). `colony_backend`: the same for a colony (what
`coral-ebpf query --colony` and `colony status` do).
"""

from __future__ import annotations

from typing import Any

from coral_ebpf.agent.config import AgentConfig
from coral_ebpf.agent.control_client import ControlClient
from coral_ebpf.cli.colony import colony_config, colony_status
from coral_ebpf.cli.query import execute, execute_on_colony  # the executors `coral-ebpf query` uses
from coral_ebpf.colony.backend import ColonyBackend
from coral_ebpf.errors import AgentNotRunningError


def colony_backend(path: str | None) -> ColonyBackend:
    """The colony whose config is `path` (None: the default file): its control socket, else its database."""
    config = colony_config(path)
    return ColonyBackend(lambda kind, params: execute_on_colony(path, kind, params), lambda: colony_status(config))


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
