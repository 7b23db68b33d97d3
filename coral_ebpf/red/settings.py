"""`red:` section: which engine produces RED data (Beyla or the built-in BCC probe)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coral_ebpf.config.formats import section

ENGINES = ("auto", "beyla", "bcc")

SCHEMA = section(
    {
        "engine": {
            "enum": list(ENGINES),
            "description": "auto: Beyla where it can run, else the built-in BCC probe",
        },
    },
    "RED engine selection",
)


@dataclass(frozen=True)
class RedSettings:
    engine: str = "auto"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RedSettings:
        return cls(engine=data.get("engine", "auto"))
