"""`otlp:` section: the OTLP receiver's listeners and limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coral_ebpf.config.formats import DURATION, ENDPOINT, SIZE, section
from coral_ebpf.units import parse_duration, parse_size

SCHEMA = section(
    {
        "grpc_endpoint": ENDPOINT,
        "http_endpoint": ENDPOINT,
        "max_body_bytes": {**SIZE, "description": "Largest accepted request, compressed and decompressed"},
        "retry_after": {**DURATION, "description": "Retry-After sent with 429/503 when the write queue is full"},
        "max_time_ahead": {
            **DURATION,
            "description": "Spans and points timed further ahead of the agent's clock are rejected",
        },
    },
    "OTLP receiver (gRPC and HTTP)",
)


@dataclass(frozen=True)
class OtlpSettings:
    grpc_endpoint: str | None = "127.0.0.1:4317"
    http_endpoint: str | None = "127.0.0.1:4318"
    max_body_bytes: int = 16 * 1024 * 1024
    retry_after: float = 1.0
    max_time_ahead: float = 86400.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OtlpSettings:
        defaults = cls()
        return cls(
            grpc_endpoint=data.get("grpc_endpoint", defaults.grpc_endpoint) or None,
            http_endpoint=data.get("http_endpoint", defaults.http_endpoint) or None,
            max_body_bytes=parse_size(data.get("max_body_bytes", defaults.max_body_bytes)),
            retry_after=parse_duration(data.get("retry_after", defaults.retry_after)),
            max_time_ahead=parse_duration(data.get("max_time_ahead", defaults.max_time_ahead)),
        )
