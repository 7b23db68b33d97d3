"""`ui:` section: the web view served by the agent on its own endpoint (off unless set)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral_ebpf.config.formats import ENDPOINT, PATH, section
from coral_ebpf.errors import ConfigError
from coral_ebpf.units import parse_endpoint

SCHEMA = section(
    {
        "endpoint": {
            **ENDPOINT,
            "description": "host:port of the read-only web view; empty (the default) = off. Loopback unless "
            "ui.token_file is set",
        },
        "token_file": {**PATH, "description": "file holding the token every request must carry (0600)"},
    },
    "Read-only web view: services, RED over time, traces, health",
)


@dataclass(frozen=True)
class UiSettings:
    endpoint: str | None = None
    token_file: Path | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UiSettings:
        from coral_ebpf.ui.auth import is_loopback

        endpoint = data.get("endpoint") or None
        token_file = Path(data["token_file"]) if data.get("token_file") else None
        if endpoint is not None and token_file is None and not is_loopback(parse_endpoint(endpoint)[0]):
            raise ConfigError(
                f"ui.endpoint {endpoint} is reachable from other hosts but ui.token_file is not set",
                "set ui.token_file to a 0600 file holding a long random token, or listen on 127.0.0.1",
            )
        return cls(endpoint=endpoint, token_file=token_file)

    def token(self) -> str | None:
        """The token from `token_file` (None when there is none); raises ConfigError when it is unusable."""
        if self.token_file is None:
            return None
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"ui.token_file {self.token_file}: {exc.strerror or exc}") from None
        if len(token) < 16:
            raise ConfigError(
                f"ui.token_file {self.token_file} holds no token of at least 16 characters",
                "write a long random token into it, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe())'",
            )
        return token
