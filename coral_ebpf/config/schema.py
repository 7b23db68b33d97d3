"""The whole configuration: top-level keys plus one section per part.

Each part owns its section (`<part>/settings.py`: a JSON Schema fragment and a frozen
dataclass with the defaults), in the way each OpenTelemetry Collector component owns its
config. This module only assembles them.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coral_ebpf.agent.settings import SCHEMA as CONTROL_SCHEMA
from coral_ebpf.agent.settings import ControlSettings
from coral_ebpf.beyla.settings import SCHEMA as BEYLA_SCHEMA
from coral_ebpf.beyla.settings import BeylaSettings
from coral_ebpf.config.formats import PATH, section
from coral_ebpf.discovery.settings import SCHEMA as DISCOVERY_SCHEMA
from coral_ebpf.discovery.settings import DiscoverySettings
from coral_ebpf.otlp.settings import SCHEMA as OTLP_SCHEMA
from coral_ebpf.otlp.settings import OtlpSettings
from coral_ebpf.pullapi.settings import SCHEMA as COLONY_API_SCHEMA
from coral_ebpf.pullapi.settings import ColonyApiSettings
from coral_ebpf.red.settings import SCHEMA as RED_SCHEMA
from coral_ebpf.red.settings import RedSettings
from coral_ebpf.storage.settings import SCHEMA as STORAGE_SCHEMA
from coral_ebpf.storage.settings import StorageSettings

DEFAULT_STATE_DIR = Path("/var/lib/coral-ebpf")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("logfmt", "json")


def build_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "coral-ebpf agent configuration",
        **section(
            {
                "state_dir": {**PATH, "description": "Directory for the database, generated configs and caches"},
                "log_level": {"enum": list(LOG_LEVELS)},
                "log_format": {"enum": list(LOG_FORMATS)},
                "agent_id": {"type": "string", "minLength": 1, "description": "Defaults to the host name"},
                "otlp": OTLP_SCHEMA,
                "storage": STORAGE_SCHEMA,
                "control": CONTROL_SCHEMA,
                "discovery": DISCOVERY_SCHEMA,
                "beyla": BEYLA_SCHEMA,
                "red": RED_SCHEMA,
                "colony_api": COLONY_API_SCHEMA,
            }
        ),
    }


@dataclass(frozen=True)
class AgentConfig:
    source: str
    state_dir: Path
    log_level: str
    log_format: str
    agent_id: str
    otlp: OtlpSettings
    storage: StorageSettings
    control: ControlSettings
    discovery: DiscoverySettings
    beyla: BeylaSettings
    red: RedSettings
    colony_api: ColonyApiSettings = field(default_factory=ColonyApiSettings)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> AgentConfig:
        """Build from a document that already passed schema validation."""
        state_dir = Path(data.get("state_dir", DEFAULT_STATE_DIR))
        return cls(
            source=source,
            state_dir=state_dir,
            log_level=data.get("log_level", "info"),
            log_format=data.get("log_format", "logfmt"),
            agent_id=data.get("agent_id") or socket.gethostname(),
            otlp=OtlpSettings.from_dict(data.get("otlp", {})),
            storage=StorageSettings.from_dict(data.get("storage", {}), state_dir),
            control=ControlSettings.from_dict(data.get("control", {})),
            discovery=DiscoverySettings.from_dict(data.get("discovery", {})),
            beyla=BeylaSettings.from_dict(data.get("beyla", {}), state_dir),
            red=RedSettings.from_dict(data.get("red", {})),
            colony_api=ColonyApiSettings.from_dict(data.get("colony_api", {})),
        )
