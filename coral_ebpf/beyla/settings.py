"""`beyla:` section: whether and how the agent runs Grafana Beyla.

Every key is either passed to Beyla (through the generated YAML or its environment), used by
the supervisor, or rejected with a message naming it; none is accepted and ignored. The table
of where each key goes is in docs/beyla.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coral_ebpf.config.formats import BOOL, DURATION, PATH, SIZE, section
from coral_ebpf.units import parse_duration, parse_size

# Beyla's own `instrumentations` values (otel_*_export.instrumentations in its JSON Schema).
PROTOCOLS = (
    "aerospike",
    "amqp",
    "couchbase",
    "dns",
    "genai",
    "gpu",
    "grpc",
    "http",
    "kafka",
    "memcached",
    "mongo",
    "mqtt",
    "nats",
    "redis",
    "sql",
    "sunrpc",
)
DEFAULT_PROTOCOLS = ("http", "grpc", "sql")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
LOG_LEVELS = ("debug", "info", "warn", "error")
OTLP_PROTOCOLS = ("http/protobuf", "grpc")
# beyla.histograms -> Beyla's otel_metrics_export.histogram_aggregation (the OTel SDK's names).
HISTOGRAM_AGGREGATIONS = {
    "exponential": "base2_exponential_bucket_histogram",
    "explicit": "explicit_bucket_histogram",
}
UNMATCHED_ROUTES = ("unset", "path", "wildcard", "heuristic", "low-cardinality")
IGNORE_MODES = ("all", "metrics", "traces")

# Resource attributes Beyla sets itself for every service; a static attribute with one of these
# names would silently fight Beyla's value, so it is refused.
RESERVED_ATTRIBUTES = frozenset(
    {
        "service.name",
        "service.namespace",
        "service.instance.id",
        "telemetry.sdk.name",
        "telemetry.sdk.language",
        "telemetry.sdk.version",
        "telemetry.distro.name",
        "telemetry.distro.version",
        "host.name",
        "host.id",
        "os.type",
    }
)
_ATTRIBUTE_NAME = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
_PORTS_TEXT = r"^\s*\d+\s*(-\s*\d+\s*)?(,\s*\d+\s*(-\s*\d+\s*)?)*$"

_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string", "minLength": 1}}

SCHEMA = section(
    {
        "enabled": {**BOOL, "description": "Run and supervise Beyla"},
        "binary": {
            **PATH,
            "description": "Path of the beyla executable (else $CORAL_EBPF_BEYLA_BIN, then PATH)",
            "x-default": "(lookup)",
        },
        "force_start": {
            **BOOL,
            "description": "Start Beyla even where the capability probe says it cannot work (status keeps the warning)",
        },
        "log_level": {"enum": list(LOG_LEVELS), "description": "Beyla's own log level (its lines are relayed)"},
        "otlp_protocol": {
            "enum": list(OTLP_PROTOCOLS),
            "description": "How Beyla sends OTLP to the agent's receiver (grpc uses otlp.grpc_endpoint)",
        },
        "metrics_interval": {**DURATION, "description": "Beyla's metric export period"},
        "histograms": {
            "enum": list(HISTOGRAM_AGGREGATIONS),
            "description": (
                "Beyla's histograms (otel_metrics_export.histogram_aggregation): exponential (base-2, the finest "
                "scale that fits 160 buckets) or explicit (OTel's default bounds, 0-10 s)"
            ),
        },
        "traces_batch_timeout": {**DURATION, "description": "Longest time a span waits in Beyla's batch"},
        "shutdown_timeout": {
            **DURATION,
            "description": "Beyla's graceful shutdown time; SIGKILL follows 5s after it",
        },
        "debounce": {**DURATION, "description": "Quiet time after a discovery change before Beyla restarts"},
        "protocols": {
            "type": "array",
            "items": {"enum": list(PROTOCOLS)},
            "uniqueItems": True,
            "minItems": 1,
            "description": "Protocols Beyla exports (its otel_*_export.instrumentations)",
        },
        "attributes": {
            "type": "object",
            "propertyNames": {"pattern": _ATTRIBUTE_NAME},
            "additionalProperties": {"type": "string"},
            "description": "Static resource attributes the agent adds to every Beyla batch it receives",
        },
        "routes": section(
            {
                "patterns": {**_STRINGS, "description": "Route templates, e.g. /users/{id}"},
                "ignored_patterns": {**_STRINGS, "description": "Routes to drop, e.g. /health"},
                "ignore_mode": {
                    "enum": list(IGNORE_MODES),
                    "description": "What ignored routes are dropped from",
                    "x-default": "Beyla's",
                },
                "unmatched": {
                    "enum": list(UNMATCHED_ROUTES),
                    "description": "http.route for unmatched paths",
                    "x-default": "Beyla's (`low-cardinality`)",
                },
                "wildcard_char": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1,
                    "description": "Wildcard character in routes (with unmatched: wildcard)",
                    "x-default": "Beyla's (`*`)",
                },
            },
            "Beyla's routes decorator",
        ),
        "sampling": section(
            {
                "sampler": {
                    "enum": list(SAMPLERS),
                    "description": "Beyla's trace sampler",
                    "x-default": "Beyla's (`parentbased_always_on`)",
                },
                "ratio": {"type": "number", "minimum": 0, "maximum": 1, "description": "For *traceidratio samplers"},
            },
            "Beyla's trace sampler",
        ),
        "limits": section(
            {
                "memory_soft": {**SIZE, "description": "GOMEMLIMIT for Beyla"},
                "memory_max": {
                    **SIZE,
                    "type": ["string", "integer", "null"],
                    "description": "Hard memory limit: cgroup memory limit when possible, else RLIMIT_AS",
                    "x-default": "none",
                },
                "traces_queue_size": {
                    "type": "integer",
                    "minimum": 2,
                    "description": "Beyla's span queue length",
                    "x-default": "Beyla's",
                },
                "metrics_ttl": {
                    **DURATION,
                    "description": "Series not updated for this long are dropped by Beyla",
                    "x-default": "Beyla's",
                },
            },
            "Resource limits for Beyla",
        ),
        "instrument": {
            "type": "array",
            "items": {
                **section(
                    {
                        "open_ports": {
                            "type": ["string", "integer"],
                            "pattern": _PORTS_TEXT,
                            "minimum": 1,
                            "maximum": 65535,
                            "description": "Ports or ranges: 8080 or '80,443,8000-8999'",
                        },
                        "exe_path": {"type": "string", "minLength": 1, "description": "Glob on the executable path"},
                    }
                ),
                "minProperties": 1,
            },
            "description": "Static selectors instrumented in addition to the discovered services",
        },
        "restart": section(
            {
                "backoff_initial": {**DURATION, "description": "First restart delay (doubles each time)"},
                "backoff_max": {**DURATION, "description": "Longest restart delay"},
                "healthy_reset": {**DURATION, "description": "Healthy time after which the back-off starts over"},
                "max_restarts": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Consecutive failed starts before the state becomes failed",
                },
            },
            "Restart policy",
        ),
        "health": section(
            {
                "grace": {**DURATION, "description": "Start-up time during which failed checks do not count"},
                "interval": {**DURATION, "description": "/healthz check period"},
                "timeout": {**DURATION, "description": "/healthz check timeout"},
                "failures": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Consecutive failed /healthz checks before Beyla is restarted",
                },
            },
            "Health checking",
        ),
    },
    "Grafana Beyla supervision",
)


@dataclass(frozen=True)
class RouteSettings:
    patterns: tuple[str, ...] = ()
    ignored_patterns: tuple[str, ...] = ()
    ignore_mode: str | None = None
    unmatched: str | None = None
    wildcard_char: str | None = None

    @property
    def empty(self) -> bool:
        return self == RouteSettings()


@dataclass(frozen=True)
class SamplingSettings:
    sampler: str | None = None  # None: Beyla's default (parentbased_always_on)
    ratio: float | None = None


@dataclass(frozen=True)
class LimitSettings:
    memory_soft: int = 512 * 1024 * 1024
    memory_max: int | None = None
    traces_queue_size: int | None = None
    metrics_ttl: float | None = None


@dataclass(frozen=True)
class InstrumentRule:
    open_ports: str | None = None
    exe_path: str | None = None


@dataclass(frozen=True)
class RestartSettings:
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    healthy_reset: float = 30.0
    max_restarts: int = 10


@dataclass(frozen=True)
class HealthSettings:
    grace: float = 20.0
    interval: float = 10.0
    timeout: float = 5.0
    failures: int = 5


@dataclass(frozen=True)
class BeylaSettings:
    enabled: bool = True
    binary: Path | None = None
    force_start: bool = False
    log_level: str = "info"
    otlp_protocol: str = "http/protobuf"
    metrics_interval: float = 5.0
    histograms: str = "exponential"
    traces_batch_timeout: float = 1.0
    shutdown_timeout: float = 10.0
    debounce: float = 5.0
    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS
    attributes: Mapping[str, str] = field(default_factory=dict)
    routes: RouteSettings = RouteSettings()
    sampling: SamplingSettings = SamplingSettings()
    limits: LimitSettings = LimitSettings()
    instrument: tuple[InstrumentRule, ...] = ()
    restart: RestartSettings = RestartSettings()
    health: HealthSettings = HealthSettings()
    state_dir: Path = Path("/var/lib/coral-ebpf")

    @property
    def work_dir(self) -> Path:
        """Where the generated config, version cache and pid file live (mode 0700)."""
        return self.state_dir / "beyla"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], state_dir: Path) -> BeylaSettings:
        """Build from a `beyla:` mapping that passed schema validation; ValueError on cross-key problems."""
        d = cls()
        return cls(
            enabled=bool(data.get("enabled", d.enabled)),
            binary=Path(data["binary"]) if "binary" in data else None,
            force_start=bool(data.get("force_start", d.force_start)),
            log_level=str(data.get("log_level", d.log_level)),
            otlp_protocol=str(data.get("otlp_protocol", d.otlp_protocol)),
            metrics_interval=_beyla_duration(data, "metrics_interval", d.metrics_interval),
            histograms=str(data.get("histograms", d.histograms)),
            traces_batch_timeout=_beyla_duration(data, "traces_batch_timeout", d.traces_batch_timeout),
            shutdown_timeout=_beyla_duration(data, "shutdown_timeout", d.shutdown_timeout),
            debounce=parse_duration(data.get("debounce", d.debounce)),
            protocols=tuple(data.get("protocols", d.protocols)),
            attributes=_attributes(data.get("attributes", {})),
            routes=_routes(data.get("routes", {})),
            sampling=_sampling(data.get("sampling", {})),
            limits=_limits(data.get("limits", {})),
            instrument=tuple(_rule(i, rule) for i, rule in enumerate(data.get("instrument", ()))),
            restart=_restart(data.get("restart", {})),
            health=_health(data.get("health", {})),
            state_dir=state_dir,
        )


def _beyla_duration(data: Mapping[str, Any], key: str, default: float, prefix: str = "beyla.") -> float:
    """A duration Beyla will read: whole milliseconds, at least 1ms (its schema: ^[0-9]+(ms|s|m)$)."""
    if key not in data:
        return default
    seconds = parse_duration(data[key])
    if seconds < 0.001:
        raise ValueError(f"{prefix}{key}: {data[key]!r} is shorter than Beyla's smallest unit (1ms)")
    if abs(seconds * 1000 - round(seconds * 1000)) > 1e-6:
        raise ValueError(f"{prefix}{key}: {data[key]!r} is not a whole number of milliseconds, which Beyla requires")
    return seconds


def _attributes(data: Mapping[str, Any]) -> dict[str, str]:
    reserved = sorted(set(data) & RESERVED_ATTRIBUTES)
    if reserved:
        raise ValueError(
            f"beyla.attributes.{reserved[0]}: Beyla sets this resource attribute itself for each service; "
            "choose another name (e.g. deployment.environment)"
        )
    return {str(key): str(value) for key, value in data.items()}


def _routes(data: Mapping[str, Any]) -> RouteSettings:
    if "ignore_mode" in data and not data.get("ignored_patterns"):
        raise ValueError("beyla.routes.ignore_mode: has no effect without beyla.routes.ignored_patterns")
    if "wildcard_char" in data and data.get("unmatched") != "wildcard":
        raise ValueError("beyla.routes.wildcard_char: only used with beyla.routes.unmatched: wildcard")
    return RouteSettings(
        patterns=tuple(data.get("patterns", ())),
        ignored_patterns=tuple(data.get("ignored_patterns", ())),
        ignore_mode=data.get("ignore_mode"),
        unmatched=data.get("unmatched"),
        wildcard_char=data.get("wildcard_char"),
    )


def _sampling(data: Mapping[str, Any]) -> SamplingSettings:
    sampler = data.get("sampler")
    ratio = data.get("ratio")
    if ratio is not None and sampler is None:
        sampler = "parentbased_traceidratio"
    if ratio is not None and sampler not in RATIO_SAMPLERS:
        raise ValueError(f"beyla.sampling.ratio: only used by the traceidratio samplers, not {sampler!r}")
    if sampler in RATIO_SAMPLERS and ratio is None:
        raise ValueError(f"beyla.sampling.ratio: required with sampler {sampler!r} (a number from 0 to 1)")
    return SamplingSettings(sampler=sampler, ratio=None if ratio is None else float(ratio))


def _limits(data: Mapping[str, Any]) -> LimitSettings:
    d = LimitSettings()
    soft = parse_size(data.get("memory_soft", d.memory_soft))
    hard_value = data.get("memory_max")
    hard = None if hard_value is None else parse_size(hard_value)
    if soft < 32 * 1024 * 1024:
        raise ValueError("beyla.limits.memory_soft: below 32MiB Beyla's garbage collector would run constantly")
    if hard is not None and hard < soft:
        raise ValueError("beyla.limits.memory_max: must be at least beyla.limits.memory_soft")
    ttl = _beyla_duration(data, "metrics_ttl", 0.0, prefix="beyla.limits.") if "metrics_ttl" in data else None
    queue = data.get("traces_queue_size")
    return LimitSettings(
        memory_soft=soft,
        memory_max=hard,
        traces_queue_size=None if queue is None else int(queue),
        metrics_ttl=ttl,
    )


def _rule(index: int, data: Mapping[str, Any]) -> InstrumentRule:
    ports = data.get("open_ports")
    if ports is not None:
        ports = str(ports).replace(" ", "")
        for part in ports.split(","):
            low, _, high = part.partition("-")
            if not 1 <= int(low) <= 65535 or (high and not int(low) <= int(high) <= 65535):
                raise ValueError(f"beyla.instrument.{index}.open_ports: {part!r} is not a port or range in 1-65535")
    exe = data.get("exe_path")
    if exe is not None and not re.match(r"^[/*?\[]", exe):
        raise ValueError(f"beyla.instrument.{index}.exe_path: {exe!r} must be an absolute path or start with a glob")
    return InstrumentRule(open_ports=ports, exe_path=exe)


def _restart(data: Mapping[str, Any]) -> RestartSettings:
    d = RestartSettings()
    initial = parse_duration(data.get("backoff_initial", d.backoff_initial))
    maximum = parse_duration(data.get("backoff_max", d.backoff_max))
    if initial <= 0:
        raise ValueError("beyla.restart.backoff_initial: must be greater than 0")
    if maximum < initial:
        raise ValueError("beyla.restart.backoff_max: must be at least beyla.restart.backoff_initial")
    return RestartSettings(
        backoff_initial=initial,
        backoff_max=maximum,
        healthy_reset=parse_duration(data.get("healthy_reset", d.healthy_reset)),
        max_restarts=int(data.get("max_restarts", d.max_restarts)),
    )


def _health(data: Mapping[str, Any]) -> HealthSettings:
    d = HealthSettings()
    interval = parse_duration(data.get("interval", d.interval))
    timeout = parse_duration(data.get("timeout", d.timeout))
    if interval <= 0 or timeout <= 0:
        raise ValueError("beyla.health.interval and beyla.health.timeout must be greater than 0")
    return HealthSettings(
        grace=parse_duration(data.get("grace", d.grace)),
        interval=interval,
        timeout=timeout,
        failures=int(data.get("failures", d.failures)),
    )


def beyla_only_keys_set(settings: BeylaSettings) -> list[str]:
    """The keys set in `beyla:` that shape only Beyla's own output, so that the built-in BCC engine
    does not apply them (its route patterns are `red.routes`)."""
    defaults = BeylaSettings()
    keys = []
    if settings.routes != defaults.routes:
        keys.append("beyla.routes")
    if settings.sampling != defaults.sampling:
        keys.append("beyla.sampling")
    if settings.attributes:
        keys.append("beyla.attributes")
    return keys
