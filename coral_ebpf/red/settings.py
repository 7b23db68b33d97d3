"""`red:` section: which engine produces RED data, and how the built-in BCC engine runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coral_ebpf.config.formats import BOOL, DURATION, SIZE, section
from coral_ebpf.errors import ConfigError
from coral_ebpf.probes.channel import CHANNEL_SETTINGS
from coral_ebpf.probes.http_red.loader import HttpRedConfig
from coral_ebpf.red.sampling import SCHEMA as SAMPLING_SCHEMA
from coral_ebpf.red.sampling import SamplingSettings
from coral_ebpf.units import parse_duration, parse_size

ENGINES = ("auto", "beyla", "bcc")
UNMATCHED_ROUTES = ("low-cardinality", "heuristic", "path", "wildcard")
TEMPORALITIES = ("delta", "cumulative")
# Keys an older configuration may hold, and the key that replaced each.
RENAMED = {"event_transport": "event_channel", "event_buffer_size": "event_channel_size"}
PATH_MAX_CHOICES = (32, 64, 128, 256)
PIPELINE_DEPTH_CHOICES = (2, 4, 8, 16)
# Health checks, probes and scrapes: frequent, uniform, and not what anyone asks RED data about.
DEFAULT_IGNORED_ROUTES = ("/health", "/healthz", "/ready", "/readyz", "/livez", "/metrics", "/favicon.ico")

_ROUTE_PATTERN = {"type": "string", "pattern": "^/", "minLength": 1}

SCHEMA = section(
    {
        "engine": {
            "enum": list(ENGINES),
            "description": "auto: Beyla where it can run, else the built-in BCC probe",
        },
        "routes": {
            "type": "array",
            "items": _ROUTE_PATTERN,
            "description": "Route patterns (/users/{id}, /api/*), first match wins (BCC engine)",
        },
        "unmatched_routes": {
            "enum": list(UNMATCHED_ROUTES),
            "description": "Route of a path no pattern matches: low-cardinality (heuristic, then at most "
            "max_path_segment_cardinality words per position), heuristic (ids become *), path, or wildcard (/**)",
        },
        "max_path_segment_cardinality": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10000,
            "description": "low-cardinality: distinct words kept at one position of a service's paths; more become *",
        },
        "fold_not_found": {
            **BOOL,
            "description": "404 answers whose path matches no red.routes pattern get the one route /**",
        },
        "ignored_routes": {
            "type": "array",
            "items": _ROUTE_PATTERN,
            "description": "Paths not measured nor traced (patterns as in routes; only counted as ignored); "
            "[] measures everything",
        },
        "max_routes_per_service": {
            "type": "integer",
            "minimum": 1,
            "maximum": 100000,
            "description": "Distinct routes kept per service; later ones are reported as /**",
        },
        "export_interval": {**DURATION, "description": "How often RED metrics and spans are handed on"},
        "temporality": {"enum": list(TEMPORALITIES), "description": "Histogram temporality of exported metrics"},
        "traces": {**BOOL, "description": "Emit a SERVER span per request"},
        "sampling": SAMPLING_SCHEMA,
        "max_pending_spans": {
            "type": "integer",
            "minimum": 1,
            "description": "Spans kept waiting for export (incl. retries); older ones are dropped and counted",
        },
        "max_connections": {
            "type": "integer",
            "minimum": 64,
            "maximum": 1048576,
            "description": "Connections tracked at once in the kernel (LRU)",
        },
        "path_max": {"enum": list(PATH_MAX_CHOICES), "description": "Bytes of the request target captured"},
        "pipeline_depth": {
            "enum": list(PIPELINE_DEPTH_CHOICES),
            "description": "Requests waiting for their response per connection (keep-alive pipelining)",
        },
        "event_channel": {
            "enum": list(CHANNEL_SETTINGS),
            "description": "Kernel-to-agent channel: auto (ring buffer, else perf buffer), ring_buffer or perf_buffer",
        },
        "event_channel_size": {
            **SIZE,
            "description": "Ring buffer size (perf buffers: split over the CPUs); rounded down to a power of two pages",
        },
        **{old: {"deprecated": True, "description": f"Renamed: use {new}"} for old, new in RENAMED.items()},
        "track_preexisting_connections": {
            **BOOL,
            "description": "Also follow connections accepted before the probe started, from their next request",
        },
    },
    "RED engine selection and the built-in BCC engine",
)


@dataclass(frozen=True)
class RedSettings:
    engine: str = "auto"
    routes: tuple[str, ...] = ()
    unmatched_routes: str = "low-cardinality"
    max_routes_per_service: int = 200
    max_path_segment_cardinality: int = 10
    fold_not_found: bool = True
    ignored_routes: tuple[str, ...] = DEFAULT_IGNORED_ROUTES
    export_interval: float = 10.0
    temporality: str = "delta"
    traces: bool = True
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    max_pending_spans: int = 50000
    max_connections: int = 16384
    path_max: int = 128
    pipeline_depth: int = 4
    event_channel: str = "auto"
    event_channel_size: int = 4 * 1024 * 1024
    track_preexisting_connections: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RedSettings:
        for old, new in RENAMED.items():
            if old in data:
                raise ConfigError(
                    f"red.{old} was renamed to red.{new}",
                    "red.event_channel: auto|ring_buffer|perf_buffer (was ringbuf|perf) and "
                    "red.event_channel_size: bytes",
                )
        defaults = cls()
        settings = cls(
            engine=data.get("engine", defaults.engine),
            routes=tuple(data.get("routes", defaults.routes)),
            unmatched_routes=data.get("unmatched_routes", defaults.unmatched_routes),
            max_routes_per_service=int(data.get("max_routes_per_service", defaults.max_routes_per_service)),
            max_path_segment_cardinality=int(
                data.get("max_path_segment_cardinality", defaults.max_path_segment_cardinality)
            ),
            fold_not_found=bool(data.get("fold_not_found", defaults.fold_not_found)),
            ignored_routes=tuple(data.get("ignored_routes", defaults.ignored_routes)),
            export_interval=parse_duration(data.get("export_interval", defaults.export_interval)),
            temporality=data.get("temporality", defaults.temporality),
            traces=bool(data.get("traces", defaults.traces)),
            sampling=SamplingSettings.from_dict(data.get("sampling", {})),
            max_pending_spans=int(data.get("max_pending_spans", defaults.max_pending_spans)),
            max_connections=int(data.get("max_connections", defaults.max_connections)),
            path_max=int(data.get("path_max", defaults.path_max)),
            pipeline_depth=int(data.get("pipeline_depth", defaults.pipeline_depth)),
            event_channel=data.get("event_channel", defaults.event_channel),
            event_channel_size=parse_size(data.get("event_channel_size", defaults.event_channel_size)),
            track_preexisting_connections=bool(
                data.get("track_preexisting_connections", defaults.track_preexisting_connections)
            ),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Checks the schema cannot express; raises ConfigError naming the key."""
        from coral_ebpf.red.routes import RoutePattern

        for key, patterns in (("routes", self.routes), ("ignored_routes", self.ignored_routes)):
            for pattern in patterns:
                try:
                    RoutePattern.parse(pattern)
                except ValueError as exc:
                    raise ConfigError(f"red.{key}: {exc}", "write patterns like /users/{id} or /api/*") from None
        if self.export_interval < 0.1:
            raise ConfigError(
                f"red.export_interval: {self.export_interval}s is too short", "use at least 100ms (e.g. 10s)"
            )
        if self.event_channel_size < 64 * 1024:
            raise ConfigError(
                f"red.event_channel_size: {self.event_channel_size} bytes is too small",
                "use at least 64KiB (e.g. 4MiB)",
            )

    def probe_config(self) -> HttpRedConfig:
        """What the BPF program is built with."""
        return HttpRedConfig(
            max_connections=self.max_connections,
            path_max=self.path_max,
            pipeline_depth=self.pipeline_depth,
            track_preexisting_connections=self.track_preexisting_connections,
            event_channel=self.event_channel,
            event_channel_size=self.event_channel_size,
        )
