"""The lifecycle every long-running part of the agent follows."""

from __future__ import annotations

from typing import Any, Protocol


class Component(Protocol):
    name: str

    def start(self) -> None:
        """Start background work; return once the part is serving (or raise a CoralError)."""

    def stop(self, timeout: float) -> None:
        """Stop within `timeout` seconds, keeping any data already accepted."""

    def status(self) -> dict[str, Any]:
        """JSON-ready state: at least `state` and `since` (unix seconds)."""
