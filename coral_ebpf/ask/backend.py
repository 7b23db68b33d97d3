"""Where the answers come from: what the MCP tools and the web view need of the agent.

`Backend` is `query(kind, params)` (the same query executor `coral-ebpf query` uses) and
`status()` (what `coral-ebpf status --json` prints). Inside the agent that is `InAgentBackend`;
from the command line it is `coral_ebpf.cli.backend.AgentBackend` (the control socket, else the
database file read-only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


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
