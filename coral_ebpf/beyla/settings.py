"""`beyla:` section: whether and how the agent runs Grafana Beyla.

The supervisor issue extends this section; every key here is either passed to Beyla or
used by the supervisor, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral_ebpf.config.formats import BOOL, PATH, section

SCHEMA = section(
    {
        "enabled": {**BOOL, "description": "Run and supervise Beyla"},
        "binary": {**PATH, "description": "Path of the beyla executable (else $CORAL_EBPF_BEYLA_BIN, then PATH)"},
    },
    "Grafana Beyla supervision",
)


@dataclass(frozen=True)
class BeylaSettings:
    enabled: bool = True
    binary: Path | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], state_dir: Path) -> BeylaSettings:
        del state_dir  # used by the supervisor's own keys (generated config location)
        return cls(
            enabled=bool(data.get("enabled", True)),
            binary=Path(data["binary"]) if "binary" in data else None,
        )
