"""`discovery:` section: the agent's own BCC-based service discovery."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coral_ebpf.config.formats import BOOL, SIZE, section
from coral_ebpf.errors import ConfigError
from coral_ebpf.probes.channel import CHANNEL_SETTINGS, MIN_SIZE
from coral_ebpf.units import parse_size

# Keys an older configuration may hold, and the key that replaced each.
RENAMED = {"buffer": "event_channel", "buffer_pages": "event_channel_size"}

SCHEMA = section(
    {
        "enabled": {**BOOL, "description": "Run live discovery (BCC tracepoints + netlink snapshot)"},
        "exclude": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "description": "Glob patterns on the executable path or name, the task name, or the service name",
        },
        "event_channel": {
            "enum": list(CHANNEL_SETTINGS),
            "description": "How probes hand events over: ring_buffer (kernel >= 5.8), perf_buffer, "
            "or auto (ring buffer, else perf buffer)",
        },
        "event_channel_size": {
            **SIZE,
            "description": "Each probe's ring buffer size (perf buffers: split over the CPUs); "
            "rounded down to a power of two pages, at least 4KiB",
        },
        **{old: {"deprecated": True, "description": f"Renamed: use {new}"} for old, new in RENAMED.items()},
    },
    "Service discovery",
)


@dataclass(frozen=True)
class DiscoverySettings:
    enabled: bool = True
    exclude: tuple[str, ...] = ()
    event_channel: str = "auto"
    event_channel_size: int = 256 * 1024

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiscoverySettings:
        for old, new in RENAMED.items():
            if old in data:
                raise ConfigError(
                    f"discovery.{old} was renamed to discovery.{new}",
                    "discovery.event_channel: auto|ring_buffer|perf_buffer and discovery.event_channel_size: "
                    "bytes (e.g. 256KiB; was buffer_pages x 4KiB)",
                )
        settings = cls(
            enabled=bool(data.get("enabled", True)),
            exclude=tuple(data.get("exclude", ())),
            event_channel=str(data.get("event_channel", "auto")),
            event_channel_size=parse_size(data.get("event_channel_size", cls.event_channel_size)),
        )
        if settings.event_channel_size < MIN_SIZE:
            raise ConfigError(
                f"discovery.event_channel_size: {settings.event_channel_size} bytes is too small",
                "use at least 4KiB (e.g. 256KiB)",
            )
        return settings
