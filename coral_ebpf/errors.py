"""Error types shared by every part.

Each error carries what went wrong and, where there is one, what to do about it (`hint`),
so the CLI can print both without knowing which part raised it.
"""

from __future__ import annotations


class CoralError(Exception):
    """Base class for errors the agent reports to a person."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(CoralError):
    """The configuration file or a value in it is wrong (CLI exit code 2)."""


class NotRootError(CoralError):
    """The operation needs root (or the named capabilities) and the process lacks them."""


class AgentNotRunningError(CoralError):
    """No agent answers on the control socket."""
