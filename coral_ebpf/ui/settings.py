"""`ui:` section: the web view the agent serves under `/ui/` on its operator listener."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coral_ebpf.config.formats import BOOL, section

UI_PREFIX = "/ui"

SCHEMA = section(
    {
        "enabled": {
            **BOOL,
            "description": "Serve the read-only web view under /ui/ on the operator listener (telemetry.endpoint), "
            "behind its TLS and token; off when telemetry.endpoint is empty",
        },
    },
    "Read-only web view: services, RED over time, traces, health",
)


@dataclass(frozen=True)
class UiSettings:
    enabled: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UiSettings:
        return cls(enabled=bool(data.get("enabled", True)))
