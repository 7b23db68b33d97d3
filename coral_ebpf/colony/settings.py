"""The colony's YAML configuration: its database, the agents it polls, polling, retention.

    state_dir: /var/lib/coral-colony
    poll: {interval: 30s, concurrency: 8, timeout: 10s}
    agents:
      - id: web-1
        address: 10.0.0.5:9001
        tls: {ca: /etc/coral/ca.pem}
        token_file: /etc/coral/web-1.token
    agents_dir: /etc/coral-ebpf/colony.d      # *.yaml, one agent each (or `agents: [...]`)
    retention: {http: 30d, grpc: 30d, sql: 14d, traces: 7d}
    telemetry: {endpoint: 127.0.0.1:9465}     # /metrics and health (the agent's listener, its own port)

Validated like the agent's file: unknown keys, bad values and missing TLS off loopback are
errors naming the file, line and key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from coral_ebpf.config.formats import DURATION, PATH, section
from coral_ebpf.config.loader import parse_document, schema_problems
from coral_ebpf.errors import ConfigError
from coral_ebpf.pullapi.security import ClientTls
from coral_ebpf.telemetry.settings import SCHEMA as TELEMETRY_SCHEMA
from coral_ebpf.telemetry.settings import TelemetrySettings
from coral_ebpf.ui.settings import SCHEMA as UI_SCHEMA
from coral_ebpf.ui.settings import UiSettings
from coral_ebpf.units import is_loopback_host, parse_duration, parse_endpoint

DEFAULT_CONFIG_PATH = Path("/etc/coral-ebpf/colony.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/coral-colony")
DEFAULT_SOCKET = Path("/run/coral-ebpf/colony.sock")
# The agent's operator listener is on 9464; the colony's is on by default too, one port up, so
# both can run on one host.
DEFAULT_COLONY_TELEMETRY_ENDPOINT = "127.0.0.1:9465"
KINDS = ("http", "grpc", "sql", "traces")
# The Go colony's defaults (internal/colony/beyla_poller.go).
DEFAULT_RETENTION = {"http": 30 * 86400.0, "grpc": 30 * 86400.0, "sql": 14 * 86400.0, "traces": 7 * 86400.0}

AGENT_SCHEMA = section(
    {
        "id": {"type": "string", "minLength": 1, "description": "The agent's agent_id (checked on every poll)"},
        "address": {"type": "string", "format": "endpoint", "description": "host:port of its colony_api"},
        "tls": section(
            {
                "ca": {**PATH, "description": "CA that signed the agent's certificate (default: system roots)"},
                "cert": {**PATH, "description": "Client certificate, when the agent requires mTLS"},
                "key": {**PATH, "description": "Client key"},
                "server_name": {"type": "string", "description": "Name to check the certificate against"},
            }
        ),
        "token_file": {**PATH, "description": "File (mode 0600) with the agent's bearer token"},
    },
    "One agent the colony polls",
)
AGENT_SCHEMA["required"] = ["id", "address"]

AGENT_LIST_SCHEMA = section({"agents": {"type": "array", "items": AGENT_SCHEMA}}, "Several agents")


def build_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "coral-ebpf colony configuration",
        **section(
            {
                "state_dir": {**PATH, "description": "Directory of the colony database (0700)"},
                "database": {**PATH, "description": "DuckDB file; default <state_dir>/colony.duckdb"},
                "control_socket": {**PATH, "description": "Unix socket for 'colony status' and 'query --colony'"},
                "log_level": {"enum": ["debug", "info", "warning", "error"]},
                "log_format": {"enum": ["logfmt", "json"]},
                "poll": section(
                    {
                        "interval": {**DURATION, "description": "Time between poll cycles (default 30s)"},
                        "concurrency": {"type": "integer", "minimum": 1, "maximum": 256},
                        "timeout": {**DURATION, "description": "Per call to one agent (default 10s)"},
                        "max_records": {"type": "integer", "minimum": 1, "maximum": 50000},
                        "max_pages": {"type": "integer", "minimum": 1, "description": "Calls per agent per cycle"},
                        "gap_retries": {"type": "integer", "minimum": 0, "maximum": 100},
                    }
                ),
                "agents": {"type": "array", "items": AGENT_SCHEMA},
                "agents_dir": {**PATH, "description": "Directory of *.yaml agent files, re-read when it changes"},
                "retention": section(dict.fromkeys(KINDS, DURATION)),
                "cleanup_interval": DURATION,
                "downsample": section(
                    {
                        "resolution": {**DURATION, "description": "Time bucket old metric rows merge into"},
                        "after": {**DURATION, "description": "Age from which rows are merged (default 1d)"},
                    },
                    "Merge old metric rows into coarser time buckets (off unless resolution is set)",
                ),
                "telemetry": TELEMETRY_SCHEMA,
                "ui": UI_SCHEMA,
            }
        ),
    }


@dataclass(frozen=True)
class AgentTarget:
    id: str
    address: str
    tls: ClientTls | None = None
    token_file: Path | None = None
    source: str = ""  # the file that defined it

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> AgentTarget:
        tls_data = data.get("tls")
        tls = None
        if tls_data is not None:
            if ("cert" in tls_data) != ("key" in tls_data):
                raise ConfigError(f"{source}: agent {data['id']}: tls.cert and tls.key go together")
            tls = ClientTls(
                ca=Path(tls_data["ca"]) if "ca" in tls_data else None,
                cert=Path(tls_data["cert"]) if "cert" in tls_data else None,
                key=Path(tls_data["key"]) if "key" in tls_data else None,
                server_name=tls_data.get("server_name"),
            )
        target = cls(
            id=data["id"],
            address=data["address"],
            tls=tls,
            token_file=Path(data["token_file"]) if "token_file" in data else None,
            source=source,
        )
        host, _ = parse_endpoint(target.address)
        if not is_loopback_host(host) and (target.tls is None or target.token_file is None):
            raise ConfigError(
                f"{source}: agent {target.id} at {target.address} is not on loopback: it needs tls and token_file",
                "agents reachable off-host serve the pull API with TLS and a bearer token",
            )
        return target


@dataclass(frozen=True)
class PollSettings:
    interval: float = 30.0
    concurrency: int = 8
    timeout: float = 10.0
    max_records: int = 50_000
    max_pages: int = 20
    gap_retries: int = 3


@dataclass(frozen=True)
class ColonyConfig:
    source: str
    state_dir: Path
    database: Path
    control_socket: Path
    log_level: str = "info"
    log_format: str = "logfmt"
    poll: PollSettings = field(default_factory=PollSettings)
    agents: tuple[AgentTarget, ...] = ()
    agents_dir: Path | None = None
    retention: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RETENTION))
    cleanup_interval: float = 3600.0
    downsample_resolution: float | None = None  # None: rows keep the agents' resolution
    downsample_after: float = 86400.0
    telemetry: TelemetrySettings = field(
        default_factory=lambda: TelemetrySettings(endpoint=DEFAULT_COLONY_TELEMETRY_ENDPOINT)
    )
    ui: UiSettings = field(default_factory=UiSettings)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> ColonyConfig:
        state_dir = Path(data.get("state_dir", DEFAULT_STATE_DIR))
        poll_data = data.get("poll", {})
        defaults = PollSettings()
        poll = PollSettings(
            interval=parse_duration(poll_data.get("interval", defaults.interval)),
            concurrency=int(poll_data.get("concurrency", defaults.concurrency)),
            timeout=parse_duration(poll_data.get("timeout", defaults.timeout)),
            max_records=int(poll_data.get("max_records", defaults.max_records)),
            max_pages=int(poll_data.get("max_pages", defaults.max_pages)),
            gap_retries=int(poll_data.get("gap_retries", defaults.gap_retries)),
        )
        if poll.interval < 0.1 or poll.timeout < 0.1:
            raise ConfigError(f"{source}: poll.interval and poll.timeout must be at least 100ms")
        agents = tuple(AgentTarget.from_dict(item, source) for item in data.get("agents", []))
        _check_unique(agents, source)
        retention = dict(DEFAULT_RETENTION)
        for kind, value in data.get("retention", {}).items():
            retention[kind] = parse_duration(value)
            if retention[kind] <= 0:
                raise ConfigError(f"{source}: retention.{kind} must be greater than 0")
        return cls(
            source=source,
            state_dir=state_dir,
            database=Path(data.get("database", state_dir / "colony.duckdb")),
            control_socket=Path(data.get("control_socket", DEFAULT_SOCKET)),
            log_level=data.get("log_level", "info"),
            log_format=data.get("log_format", "logfmt"),
            poll=poll,
            agents=agents,
            agents_dir=Path(data["agents_dir"]) if "agents_dir" in data else None,
            retention=retention,
            cleanup_interval=parse_duration(data.get("cleanup_interval", 3600.0)),
            **_downsample_settings(data.get("downsample", {}), source),
            telemetry=_telemetry_settings(data.get("telemetry", {}), source),
            ui=UiSettings.from_dict(data.get("ui", {})),
        )


def _telemetry_settings(data: Mapping[str, Any], source: str) -> TelemetrySettings:
    """The agent's `telemetry:` section with the colony's default endpoint (empty or null turns it off)."""
    settings = TelemetrySettings.from_dict({"endpoint": DEFAULT_COLONY_TELEMETRY_ENDPOINT, **data})
    if settings.endpoint is not None:
        host, _port = parse_endpoint(settings.endpoint)
        secured = settings.tls_cert is not None and settings.tls_key is not None and settings.token_file is not None
        if not is_loopback_host(host) and not secured:
            raise ConfigError(
                f"{source}: telemetry.endpoint {settings.endpoint} is not loopback: serving metrics off-host "
                "needs telemetry.tls_cert, telemetry.tls_key and telemetry.token_file",
                "set all three, or listen on 127.0.0.1",
            )
    return settings


def _downsample_settings(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    if not data:
        return {}
    if "resolution" not in data:
        raise ConfigError(f"{source}: downsample needs a resolution (e.g. 5m)")
    resolution = parse_duration(data["resolution"])
    after = parse_duration(data.get("after", 86400.0))
    if resolution < 1 or after < resolution:
        raise ConfigError(f"{source}: downsample.resolution must be at least 1s and at most downsample.after")
    return {"downsample_resolution": resolution, "downsample_after": after}


def _check_unique(agents: tuple[AgentTarget, ...], source: str) -> None:
    seen: dict[str, str] = {}
    for agent in agents:
        if agent.id in seen:
            raise ConfigError(f"{source}: agent id {agent.id!r} is listed twice ({seen[agent.id]} and {agent.source})")
        seen[agent.id] = agent.source


def validated_document(text: str, source: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """Parse YAML `text` and check it against `schema` (the agent file's rules): the mapping, or a
    ConfigError naming file, line and key."""
    document = parse_document(text, source)
    problems = schema_problems(document, schema)
    if problems:
        raise ConfigError("\n".join(problems), "see docs/colony.md")
    return document.data


def load_colony_config(path: Path | None) -> ColonyConfig:
    config_path = path or DEFAULT_CONFIG_PATH
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if path is not None:
            raise ConfigError(f"colony config file {config_path} does not exist") from None
        return ColonyConfig.from_dict({}, "(defaults)")
    except OSError as exc:
        raise ConfigError(f"cannot read colony config file {config_path}: {exc}") from exc
    document = validated_document(text, str(config_path), build_schema())
    return ColonyConfig.from_dict(document, str(config_path))


def load_agents_file(path: Path) -> list[AgentTarget]:
    """The agents one file in agents_dir defines (one mapping, or `agents: [...]`)."""
    text = path.read_text(encoding="utf-8")
    try:
        peek = yaml.safe_load(text)
    except yaml.YAMLError:
        peek = None  # validated_document reports it with its line
    schema = AGENT_LIST_SCHEMA if isinstance(peek, dict) and "agents" in peek else AGENT_SCHEMA
    document = validated_document(text, str(path), schema)
    items = document.get("agents", [document])
    return [AgentTarget.from_dict(item, str(path)) for item in items]


def all_agents(config: ColonyConfig) -> tuple[list[AgentTarget], list[str]]:
    """The static agents plus those of every *.yaml in agents_dir, and the problems found (one per bad file).

    A bad file is skipped (its problem reported in status); the other agents keep being polled.
    """
    agents = list(config.agents)
    problems: list[str] = []
    if config.agents_dir is not None:
        try:
            files = sorted(config.agents_dir.glob("*.yaml")) + sorted(config.agents_dir.glob("*.yml"))
        except OSError as exc:
            return agents, [f"agents_dir {config.agents_dir}: {exc}"]
        for file in files:
            try:
                agents.extend(load_agents_file(file))
            except (ConfigError, OSError) as exc:
                problems.append(str(exc))
    try:
        _check_unique(tuple(agents), config.source)
    except ConfigError as exc:
        problems.append(str(exc))
        unique: dict[str, AgentTarget] = {}
        for agent in agents:
            unique.setdefault(agent.id, agent)
        agents = list(unique.values())
    return agents, problems


def dir_fingerprint(directory: Path | None) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes of agents_dir's files: a change means re-read."""
    if directory is None or not directory.is_dir():
        return ()
    entries = []
    for path in sorted(directory.iterdir()):
        if path.suffix in (".yaml", ".yml"):
            info = path.stat()
            entries.append((path.name, info.st_size, info.st_mtime_ns))
    return tuple(entries)
