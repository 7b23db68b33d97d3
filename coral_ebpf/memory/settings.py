"""`limits:` section: the memory budget of the whole agent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coral_ebpf.config.formats import SIZE, section
from coral_ebpf.units import parse_size

SCHEMA = section(
    {
        "memory": {
            **SIZE,
            "description": "The agent's private memory (anonymous RSS) budget; DuckDB's storage.memory_limit is "
            "part of it; requests are refused (429) before data in flight would pass it (default 256MiB)",
        },
    },
    "Resource limits of the agent itself",
)

MiB = 1024 * 1024
# The least room left for data in flight once DuckDB's share and the agent's own footprint are taken.
MIN_IN_FLIGHT = 16 * MiB
# The agent's own footprint outside DuckDB (Python, gRPC, BCC): measured ~100 MiB anonymous here.
AGENT_FOOTPRINT = 96 * MiB


@dataclass(frozen=True)
class LimitSettings:
    memory: int = 256 * MiB

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LimitSettings:
        return cls(memory=parse_size(data.get("memory", cls.memory)))

    def problem(self, duckdb_memory_limit: int) -> str | None:
        """Why this split leaves no room for the agent or for data in flight; None when it does."""
        need = duckdb_memory_limit + AGENT_FOOTPRINT + MIN_IN_FLIGHT
        if self.memory >= need:
            return None
        return (
            f"limits.memory ({self.memory // MiB}MiB) must hold storage.memory_limit "
            f"({duckdb_memory_limit // MiB}MiB) + the agent's own ~{AGENT_FOOTPRINT // MiB}MiB + at least "
            f"{MIN_IN_FLIGHT // MiB}MiB for data in flight: raise it to {need // MiB}MiB or lower storage.memory_limit"
        )
