"""`discovery:` section: the agent's own BCC-based service discovery."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coral_ebpf.config.formats import BOOL, section

SCHEMA = section(
    {
        "enabled": {**BOOL, "description": "Run live discovery (BCC tracepoints + netlink snapshot)"},
        "exclude": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "description": "Glob patterns on the executable path or process name to leave out",
        },
    },
    "Service discovery",
)


@dataclass(frozen=True)
class DiscoverySettings:
    enabled: bool = True
    exclude: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiscoverySettings:
        return cls(enabled=bool(data.get("enabled", True)), exclude=tuple(data.get("exclude", ())))
