"""`control:` section: the local control socket that `status` and `query` talk to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral_ebpf.config.formats import PATH, section

SCHEMA = section(
    {"socket": {**PATH, "description": "Unix socket (mode 0600) serving status and queries"}},
    "Local control socket",
)

DEFAULT_CONTROL_SOCKET = Path("/run/coral-ebpf/control.sock")


@dataclass(frozen=True)
class ControlSettings:
    socket: Path = DEFAULT_CONTROL_SOCKET

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ControlSettings:
        return cls(socket=Path(data.get("socket", DEFAULT_CONTROL_SOCKET)))
