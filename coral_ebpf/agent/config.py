"""The agent's whole configuration: the top-level keys, one section per part, and the rules across them.

Each part owns its section (`<part>/settings.py`: a JSON Schema fragment and a frozen dataclass
with the defaults), in the way each OpenTelemetry Collector component owns its config. This
module, at the composition root, assembles them; `validate()` holds every rule that spans keys
or that the schema cannot express, and both `config check` and `start` run it (through
`parse_config_text`/`load_config`, and again when an `Agent` is built from a config made in code).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coral_ebpf.agent.settings import SCHEMA as CONTROL_SCHEMA
from coral_ebpf.agent.settings import ControlSettings
from coral_ebpf.beyla.settings import SCHEMA as BEYLA_SCHEMA
from coral_ebpf.beyla.settings import BeylaSettings
from coral_ebpf.config.formats import PATH, section
from coral_ebpf.config.loader import ConfigDocument, KeyPath, parse_document, read_document, schema_problems
from coral_ebpf.config.reference import UNSET, Leaf, render_table
from coral_ebpf.discovery.mapping import SCHEMA as SERVICES_SCHEMA
from coral_ebpf.discovery.mapping import MappingError, ServiceMapping, mappings_from_list
from coral_ebpf.discovery.settings import SCHEMA as DISCOVERY_SCHEMA
from coral_ebpf.discovery.settings import DiscoverySettings
from coral_ebpf.errors import ConfigError
from coral_ebpf.export.settings import SCHEMA as EXPORT_SCHEMA
from coral_ebpf.export.settings import ExportSettings
from coral_ebpf.memory.settings import SCHEMA as LIMITS_SCHEMA
from coral_ebpf.memory.settings import LimitSettings
from coral_ebpf.otlp.settings import SCHEMA as OTLP_SCHEMA
from coral_ebpf.otlp.settings import OtlpSettings
from coral_ebpf.pullapi.settings import SCHEMA as COLONY_API_SCHEMA
from coral_ebpf.pullapi.settings import ColonyApiSettings
from coral_ebpf.red.settings import SCHEMA as RED_SCHEMA
from coral_ebpf.red.settings import RedSettings
from coral_ebpf.storage.settings import SCHEMA as STORAGE_SCHEMA
from coral_ebpf.storage.settings import StorageSettings
from coral_ebpf.telemetry.settings import SCHEMA as TELEMETRY_SCHEMA
from coral_ebpf.telemetry.settings import TelemetrySettings
from coral_ebpf.ui.settings import SCHEMA as UI_SCHEMA
from coral_ebpf.ui.settings import UiSettings
from coral_ebpf.units import parse_endpoint

DEFAULT_CONFIG_PATH = Path("/etc/coral-ebpf/config.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/coral-ebpf")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("logfmt", "json")


def build_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "coral-ebpf agent configuration",
        **section(
            {
                "state_dir": {
                    **PATH,
                    "description": "Database, generated Beyla config, kernel-headers tree, caches (created 0700)",
                },
                "log_level": {"enum": list(LOG_LEVELS), "description": "The agent's log level"},
                "log_format": {"enum": list(LOG_FORMATS), "description": "Log lines on stderr"},
                "agent_id": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Stored with every row (for a central colony)",
                    "x-default": "host name",
                },
                "otlp": OTLP_SCHEMA,
                "storage": STORAGE_SCHEMA,
                "control": CONTROL_SCHEMA,
                "discovery": DISCOVERY_SCHEMA,
                "services": SERVICES_SCHEMA,
                "beyla": BEYLA_SCHEMA,
                "red": RED_SCHEMA,
                "limits": LIMITS_SCHEMA,
                "telemetry": TELEMETRY_SCHEMA,
                "export": EXPORT_SCHEMA,
                "ui": UI_SCHEMA,
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
    limits: LimitSettings
    telemetry: TelemetrySettings
    export: ExportSettings
    ui: UiSettings
    colony_api: ColonyApiSettings = field(default_factory=ColonyApiSettings)
    services: tuple[ServiceMapping, ...] = ()  # the user's names for processes, first match wins

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> AgentConfig:
        """Build from a document that already passed schema validation (section checks raise ValueError)."""
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
            limits=LimitSettings.from_dict(data.get("limits", {})),
            telemetry=TelemetrySettings.from_dict(data.get("telemetry", {})),
            export=ExportSettings.from_dict(data.get("export", {}), state_dir),
            ui=UiSettings.from_dict(data.get("ui", {})),
            colony_api=ColonyApiSettings.from_dict(data.get("colony_api", {})),
            services=mappings_from_list(data.get("services", ())),
        )


@dataclass(frozen=True)
class Problem:
    """One broken rule: the key it is reported at, what is wrong, and what to do."""

    key: KeyPath
    message: str
    hint: str = ""


def _beyla_starts(config: AgentConfig) -> bool:
    return config.beyla.enabled and config.red.engine != "bcc"


def validate(config: AgentConfig) -> list[Problem]:
    """Every rule the schema cannot express, over the whole configuration; [] when it can run."""
    problems: list[Problem] = []
    if config.red.engine == "beyla" and not config.beyla.enabled:
        problems.append(
            Problem(
                ("red", "engine"),
                "red.engine is beyla but beyla.enabled is false: nothing would produce RED data",
                "set red.engine to auto or bcc, or beyla.enabled to true",
            )
        )
    if config.otlp.max_body_bytes <= 0:
        problems.append(Problem(("otlp", "max_body_bytes"), "otlp.max_body_bytes must be more than 0", "e.g. 16MiB"))
    if _beyla_starts(config):
        grpc = config.beyla.otlp_protocol == "grpc"
        listener = config.otlp.grpc_endpoint if grpc else config.otlp.http_endpoint
        if not listener:
            key = "grpc_endpoint" if grpc else "http_endpoint"
            problems.append(
                Problem(
                    ("beyla", "otlp_protocol"),
                    f"beyla.otlp_protocol is {config.beyla.otlp_protocol} but otlp.{key} is disabled, "
                    "so Beyla would have nowhere to send its data",
                    f"enable otlp.{key}, or set beyla.otlp_protocol to the other protocol",
                )
            )
    memory_problem = config.limits.problem(config.storage.memory_limit)
    if memory_problem is not None:
        problems.append(
            Problem(("limits", "memory"), memory_problem, "raise limits.memory, or lower storage.memory_limit")
        )
    grpc_endpoint, http_endpoint = config.otlp.grpc_endpoint, config.otlp.http_endpoint
    if grpc_endpoint and http_endpoint:
        same = parse_endpoint(grpc_endpoint) == parse_endpoint(http_endpoint)
        if same and parse_endpoint(grpc_endpoint)[1] != 0:
            problems.append(
                Problem(
                    ("otlp", "http_endpoint"),
                    f"otlp.grpc_endpoint and otlp.http_endpoint are both {http_endpoint}: "
                    "two listeners cannot share one address",
                    "give each its own port (the defaults are 4317 and 4318)",
                )
            )
    return problems


def check(config: AgentConfig, document: ConfigDocument | None = None) -> AgentConfig:
    """Raise one ConfigError naming every problem `validate` finds (with its line when the document is known)."""
    problems = validate(config)
    if not problems:
        return config
    lines = [f"{document.where(p.key) if document else config.source}: {p.message}" for p in problems]
    if len(problems) == 1:
        raise ConfigError(lines[0], problems[0].hint)
    lines = [f"{line} (hint: {p.hint})" if p.hint else line for line, p in zip(lines, problems, strict=True)]
    raise ConfigError("\n".join(lines))


def config_from_document(document: ConfigDocument) -> AgentConfig:
    """Schema, sections, then the rules across keys: the one path every configuration file takes."""
    problems = schema_problems(document, build_schema())
    if problems:
        raise ConfigError("\n".join(problems), "see the configuration reference in README.md")
    try:
        config = AgentConfig.from_dict(document.data, source=document.source)
    except MappingError as exc:  # a `services:` entry that can never match
        raise ConfigError(f"{document.where(exc.key)}: {exc}", "see 'services:' in docs/discovery.md") from exc
    except ValueError as exc:  # a section's own check across its keys
        raise ConfigError(f"{document.source}: {exc}") from exc
    return check(config, document)


def parse_config_text(text: str, source: str = "<config>") -> AgentConfig:
    """Validate YAML text and return the typed configuration."""
    return config_from_document(parse_document(text, source))


def load_config(path: Path | str | None = None) -> AgentConfig:
    """Load the configuration at `path`; with no path, the default file, or built-in defaults if absent."""
    document = read_document(Path(path) if path is not None else None, DEFAULT_CONFIG_PATH)
    if document is None:
        return check(AgentConfig.from_dict({}, source="(defaults)"))
    return config_from_document(document)


def _default_of(defaults: AgentConfig) -> Callable[[Leaf], Any]:
    def lookup(leaf: Leaf) -> Any:
        value: Any = defaults
        for name in leaf.path:
            if name == "[]":
                return UNSET  # the keys of a list's items have no default
            value = getattr(value, name, UNSET)
            if value is UNSET:
                return UNSET
        return value

    return lookup


def reference_table(section: str | None = None) -> str:
    """The configuration reference (all keys, or one section's), from the schema and the typed defaults."""
    schema = build_schema()
    sections = [name for name, node in schema["properties"].items() if node.get("type") == "object"]
    if section is not None and section not in sections:
        raise ConfigError(f"no configuration section {section!r}", f"one of {', '.join(sections)}")
    defaults = AgentConfig.from_dict({}, source="(defaults)")
    return render_table(schema, _default_of(defaults), section)
