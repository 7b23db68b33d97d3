"""`otlp:` section: the OTLP receiver's listeners and limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coral_ebpf.config.formats import DURATION, ENDPOINT, SIZE, section
from coral_ebpf.units import parse_duration, parse_size

SCHEMA = section(
    {
        "grpc_endpoint": {**ENDPOINT, "description": f"OTLP/gRPC listener, {ENDPOINT['description']}"},
        "http_endpoint": {
            **ENDPOINT,
            "description": f"OTLP/HTTP listener (/v1/traces, /v1/metrics, /v1/logs), {ENDPOINT['description']}",
        },
        "max_body_bytes": {**SIZE, "description": "Largest accepted request, compressed and decompressed"},
        "retry_after": {**DURATION, "description": "Retry-After sent with 429/503 when the write queue is full"},
        "max_connections": {
            "type": "integer",
            "minimum": 1,
            "description": "Open connections per HTTP listener; more are answered 429 and closed",
        },
        "max_concurrent_calls": {
            "type": "integer",
            "minimum": 1,
            "description": "gRPC calls in progress (HTTP requests decoding) at once; more get RESOURCE_EXHAUSTED/429",
        },
        "idle_timeout": {
            **DURATION,
            "description": "HTTP: close a kept-alive connection on which no request has started for this long",
        },
        "header_timeout": {
            **DURATION,
            "description": "HTTP: a request's headers must be complete this long after its first byte (else 408 "
            "and closed)",
        },
        "body_timeout": {**DURATION, "description": "HTTP: a request body must arrive within this long (408)"},
        "max_resources_per_request": {
            "type": "integer",
            "minimum": 1,
            "description": "A request with more resources is refused (413 / RESOURCE_EXHAUSTED)",
        },
        "max_scopes_per_request": {
            "type": "integer",
            "minimum": 1,
            "description": "A request with more scopes is refused (413 / RESOURCE_EXHAUSTED)",
        },
        "max_items_per_request": {
            "type": "integer",
            "minimum": 1,
            "description": "A request with more spans, data points or log records is refused (413)",
        },
        "max_time_ahead": {
            **DURATION,
            "description": "Spans and points timed further ahead of the agent's clock are rejected",
        },
    },
    "OTLP receiver (gRPC and HTTP)",
)


@dataclass(frozen=True)
class ConnectionLimits:
    """How much one listener takes at once, and how long a client may dawdle."""

    max_connections: int = 256
    max_concurrent_calls: int = 64
    idle_timeout: float = 15.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0


@dataclass(frozen=True)
class RequestCaps:
    """What one export request may hold (`otlp/caps.py` checks it)."""

    max_resources: int = 10_000
    max_scopes: int = 20_000
    max_items: int = 200_000


@dataclass(frozen=True)
class OtlpSettings:
    grpc_endpoint: str | None = "127.0.0.1:4317"
    http_endpoint: str | None = "127.0.0.1:4318"
    max_body_bytes: int = 16 * 1024 * 1024
    retry_after: float = 1.0
    max_time_ahead: float = 86400.0
    limits: ConnectionLimits = ConnectionLimits()
    caps: RequestCaps = RequestCaps()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OtlpSettings:
        defaults = cls()
        return cls(
            grpc_endpoint=data.get("grpc_endpoint", defaults.grpc_endpoint) or None,
            http_endpoint=data.get("http_endpoint", defaults.http_endpoint) or None,
            max_body_bytes=parse_size(data.get("max_body_bytes", defaults.max_body_bytes)),
            retry_after=parse_duration(data.get("retry_after", defaults.retry_after)),
            max_time_ahead=parse_duration(data.get("max_time_ahead", defaults.max_time_ahead)),
            limits=ConnectionLimits(
                max_connections=int(data.get("max_connections", defaults.limits.max_connections)),
                max_concurrent_calls=int(data.get("max_concurrent_calls", defaults.limits.max_concurrent_calls)),
                idle_timeout=parse_duration(data.get("idle_timeout", defaults.limits.idle_timeout)),
                header_timeout=parse_duration(data.get("header_timeout", defaults.limits.header_timeout)),
                body_timeout=parse_duration(data.get("body_timeout", defaults.limits.body_timeout)),
            ),
            caps=RequestCaps(
                max_resources=int(data.get("max_resources_per_request", defaults.caps.max_resources)),
                max_scopes=int(data.get("max_scopes_per_request", defaults.caps.max_scopes)),
                max_items=int(data.get("max_items_per_request", defaults.caps.max_items)),
            ),
        )
