"""`colony_api:` section: the agent's pull API, which a colony calls to copy rows (disabled by default)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral_ebpf.config.formats import ENDPOINT, PATH, section
from coral_ebpf.pullapi.security import ServerTls
from coral_ebpf.units import is_loopback_host, parse_endpoint

SCHEMA = section(
    {
        "endpoint": {**ENDPOINT, "description": "host:port of the pull API; empty or null (default) disables it"},
        "tls": section(
            {
                "cert": {**PATH, "description": "Server certificate (PEM)"},
                "key": {**PATH, "description": "Server private key (PEM)"},
                "client_ca": {**PATH, "description": "CA whose client certificates are required (mTLS)"},
            },
            "TLS; required when the endpoint is not loopback",
        ),
        "token_file": {**PATH, "description": "File (mode 0600) with the bearer token callers must send"},
    },
    "The pull API a colony reads this agent's rows through",
)


@dataclass(frozen=True)
class ColonyApiSettings:
    endpoint: str | None = None
    tls: ServerTls | None = None
    token_file: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColonyApiSettings:
        tls_data = data.get("tls")
        tls = None
        if tls_data:
            if "cert" not in tls_data or "key" not in tls_data:
                raise ValueError("colony_api.tls needs both cert and key")
            client_ca = tls_data.get("client_ca")
            tls = ServerTls(Path(tls_data["cert"]), Path(tls_data["key"]), Path(client_ca) if client_ca else None)
        token = data.get("token_file")
        settings = cls(
            endpoint=data.get("endpoint") or None,
            tls=tls,
            token_file=Path(token) if token else None,
        )
        if settings.endpoint is not None:
            host, _port = parse_endpoint(settings.endpoint)
            if not is_loopback_host(host) and (settings.tls is None or settings.token_file is None):
                raise ValueError(
                    f"colony_api.endpoint {settings.endpoint} is not loopback: it needs colony_api.tls "
                    "(cert and key) and colony_api.token_file, or bind it to 127.0.0.1"
                )
        return settings
