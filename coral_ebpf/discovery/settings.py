"""`discovery:` section: the agent's own BCC-based service discovery."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coral_ebpf.config.formats import BOOL, section

BUFFER_MODES = ("auto", "ring_buffer", "perf_buffer")
BUFFER_PAGE_CHOICES = [2**n for n in range(13)]  # 1 .. 4096 pages

SCHEMA = section(
    {
        "enabled": {**BOOL, "description": "Run live discovery (BCC tracepoints + netlink snapshot)"},
        "exclude": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "description": "Glob patterns on the executable path or name, the task name, or the service name",
        },
        "buffer": {
            "enum": list(BUFFER_MODES),
            "description": "How probes hand events over: ring buffer (kernel >= 5.8), perf buffer, "
            "or auto (ring buffer, else perf buffer)",
        },
        "buffer_pages": {
            "enum": BUFFER_PAGE_CHOICES,
            "description": "Buffer size in memory pages, a power of two: the ring buffer's size, "
            "or each CPU's perf buffer",
        },
    },
    "Service discovery",
)


@dataclass(frozen=True)
class DiscoverySettings:
    enabled: bool = True
    exclude: tuple[str, ...] = ()
    buffer: str = "auto"
    buffer_pages: int = 64

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiscoverySettings:
        return cls(
            enabled=bool(data.get("enabled", True)),
            exclude=tuple(data.get("exclude", ())),
            buffer=str(data.get("buffer", "auto")),
            buffer_pages=int(data.get("buffer_pages", 64)),
        )
