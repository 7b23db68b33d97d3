"""`export.otlp:` section: forward everything the agent accepts to an upstream OTLP endpoint.

Every key falls back to the standard OpenTelemetry environment variable when the config does not
set it (`OTEL_EXPORTER_OTLP_ENDPOINT`, `_PROTOCOL`, `_HEADERS`, `_COMPRESSION`, `_TIMEOUT` in ms,
`_CERTIFICATE`, `_CLIENT_CERTIFICATE`, `_CLIENT_KEY`, `_INSECURE`). Export is on when the
section is present (an empty `otlp: {}` takes everything from the environment) and yields an
endpoint.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coral_ebpf.config.formats import BOOL, DURATION, PATH, SIZE, section
from coral_ebpf.units import parse_duration, parse_size

PROTOCOLS = ("grpc", "http/protobuf")
COMPRESSIONS = ("gzip", "none")
FULL_POLICIES = ("drop_oldest", "refuse")
TEMPORALITIES = ("keep", "cumulative", "delta")
# OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE -> temporality. `lowmemory` asks the SDKs for
# delta from synchronous counters and histograms; received data does not say which instrument
# made it, so it means `delta` here (up-down counters stay cumulative either way).
ENV_TEMPORALITIES = {"cumulative": "cumulative", "delta": "delta", "lowmemory": "delta"}

_OTLP = section(
    {
        "endpoint": {
            "type": "string",
            "minLength": 1,
            "description": "Upstream URL: http(s)://host:port (gRPC) or the base URL /v1/<signal> is added to",
        },
        "protocol": {
            "enum": list(PROTOCOLS),
            "description": "OTLP transport to the upstream (default from OTEL_EXPORTER_OTLP_PROTOCOL, else grpc)",
        },
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Headers sent with every export, e.g. an Authorization token (OTEL_EXPORTER_OTLP_HEADERS)",
        },
        "compression": {
            "enum": list(COMPRESSIONS),
            "description": "Compression of export requests (default from OTEL_EXPORTER_OTLP_COMPRESSION, else gzip)",
        },
        "timeout": {
            **DURATION,
            "description": "Deadline of one export request (default from OTEL_EXPORTER_OTLP_TIMEOUT, else 10s)",
        },
        "tls": section(
            {
                "ca_file": {**PATH, "description": "CA bundle the upstream's certificate is checked against"},
                "cert_file": {**PATH, "description": "Client certificate for mTLS (with key_file)"},
                "key_file": {**PATH, "description": "Client private key for mTLS (with cert_file)"},
                "insecure": {**BOOL, "description": "plain text (http:// endpoints are always plain text)"},
            }
        ),
        "temporality": {
            "enum": list(TEMPORALITIES),
            "description": "Aggregation temporality of exported sums and histograms (explicit and exponential): "
            "keep (as received), cumulative or delta (default from OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, "
            "else keep)",
        },
        "queue_max_bytes": {**SIZE, "description": "Bound of the on-disk queue (<state_dir>/export-queue)"},
        "queue_full": {
            "enum": list(FULL_POLICIES),
            "description": "drop_oldest (default: the oldest queued requests go, counted) or refuse (senders "
            "get 429 / RESOURCE_EXHAUSTED and retry: ingestion is throttled)",
        },
        "queue_fsync": {
            **BOOL,
            "description": "true (default): a request is synced to disk (group commit) before it is acknowledged, "
            "so a power cut loses nothing; false: an agent crash loses nothing, a power cut may",
        },
        "retry_initial": {**DURATION, "description": "First retry delay after a failed export (doubles each time)"},
        "retry_max": {
            **DURATION,
            "description": "Longest retry delay (a Retry-After or RetryInfo from the upstream wins)",
        },
    },
    "Forward everything the agent accepts to an upstream OTLP endpoint",
)
SCHEMA = section({"otlp": _OTLP}, "Export upstream")


def _env(name: str, environ: Mapping[str, str]) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _env_headers(environ: Mapping[str, str]) -> dict[str, str]:
    text = _env("OTEL_EXPORTER_OTLP_HEADERS", environ) or ""
    headers = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            headers[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return headers


@dataclass(frozen=True)
class OtlpExportSettings:
    endpoint: str
    protocol: str = "grpc"
    headers: Mapping[str, str] = field(default_factory=dict)
    compression: str = "gzip"
    timeout: float = 10.0
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False
    temporality: str = "keep"
    queue_dir: Path = Path("/var/lib/coral-ebpf/export-queue")
    queue_max_bytes: int = 256 * 1024 * 1024
    queue_full: str = "drop_oldest"
    queue_fsync: bool = True
    retry_initial: float = 1.0
    retry_max: float = 30.0

    @property
    def plaintext(self) -> bool:
        return self.insecure or self.endpoint.startswith("http://")


@dataclass(frozen=True)
class ExportSettings:
    otlp: OtlpExportSettings | None = None

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], state_dir: Path, environ: Mapping[str, str] | None = None
    ) -> ExportSettings:
        if "otlp" not in data:
            return cls()
        env = os.environ if environ is None else environ
        otlp = data["otlp"] or {}
        tls = otlp.get("tls", {})
        endpoint = otlp.get("endpoint") or _env("OTEL_EXPORTER_OTLP_ENDPOINT", env)
        if not endpoint:
            raise ValueError("export.otlp has no endpoint: set export.otlp.endpoint or OTEL_EXPORTER_OTLP_ENDPOINT")
        protocol = otlp.get("protocol") or _env("OTEL_EXPORTER_OTLP_PROTOCOL", env) or "grpc"
        if protocol not in PROTOCOLS:
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        compression = otlp.get("compression") or _env("OTEL_EXPORTER_OTLP_COMPRESSION", env) or "gzip"
        if compression not in COMPRESSIONS:
            raise ValueError(f"OTEL_EXPORTER_OTLP_COMPRESSION {compression!r} is not one of gzip, none")
        env_timeout = _env("OTEL_EXPORTER_OTLP_TIMEOUT", env)
        timeout = parse_duration(otlp["timeout"]) if "timeout" in otlp else (
            int(env_timeout) / 1000 if env_timeout else 10.0
        )  # fmt: skip

        def path(key: str, variable: str) -> Path | None:
            value = tls.get(key) or _env(variable, env)
            return Path(value) if value else None

        temporality = otlp.get("temporality")
        if temporality is None:
            preference = (_env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", env) or "").lower()
            if preference and preference not in ENV_TEMPORALITIES:
                raise ValueError(
                    f"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE {preference!r} is not one of "
                    + ", ".join(ENV_TEMPORALITIES)
                )
            temporality = ENV_TEMPORALITIES.get(preference, "keep")
        insecure_env = (_env("OTEL_EXPORTER_OTLP_INSECURE", env) or "").lower() == "true"
        return cls(
            OtlpExportSettings(
                endpoint=endpoint,
                protocol=protocol,
                headers={**_env_headers(env), **otlp.get("headers", {})},
                compression=compression,
                timeout=timeout,
                ca_file=path("ca_file", "OTEL_EXPORTER_OTLP_CERTIFICATE"),
                cert_file=path("cert_file", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"),
                key_file=path("key_file", "OTEL_EXPORTER_OTLP_CLIENT_KEY"),
                insecure=bool(tls.get("insecure", insecure_env)),
                temporality=temporality,
                queue_dir=state_dir / "export-queue",
                queue_max_bytes=parse_size(otlp.get("queue_max_bytes", 256 * 1024 * 1024)),
                queue_full=otlp.get("queue_full", "drop_oldest"),
                queue_fsync=bool(otlp.get("queue_fsync", True)),
                retry_initial=parse_duration(otlp.get("retry_initial", 1.0)),
                retry_max=parse_duration(otlp.get("retry_max", 30.0)),
            )
        )
