"""`telemetry:` section: the operator listener (`/metrics`, `/-/healthy`, `/-/ready`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral_ebpf.config.formats import ENDPOINT, PATH, section

SCHEMA = section(
    {
        "endpoint": {
            **ENDPOINT,
            "description": "host:port of the operator listener (Prometheus /metrics, /-/healthy, /-/ready); "
            "empty disables it. Off loopback it needs tls_cert, tls_key and token_file.",
        },
        "tls_cert": {**PATH, "description": "PEM certificate chain served by the listener"},
        "tls_key": {**PATH, "description": "PEM private key of tls_cert"},
        "token_file": {
            **PATH,
            "description": "File (mode 0600 or stricter) holding the bearer token every request must carry",
        },
    },
    "Operator listener: Prometheus metrics and health endpoints",
)

DEFAULT_TELEMETRY_ENDPOINT = "127.0.0.1:9464"


@dataclass(frozen=True)
class TelemetrySettings:
    endpoint: str | None = DEFAULT_TELEMETRY_ENDPOINT
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_file: Path | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TelemetrySettings:
        def path(key: str) -> Path | None:
            value = data.get(key)
            return Path(value) if value else None

        return cls(
            endpoint=data.get("endpoint", DEFAULT_TELEMETRY_ENDPOINT) or None,
            tls_cert=path("tls_cert"),
            tls_key=path("tls_key"),
            token_file=path("token_file"),
        )
