"""TLS material and bearer tokens for the pull API, shared by the agent (server) and the colony (client).

Off loopback the API is reachable by other hosts, so it needs TLS and a token; on loopback it
may run without (only local processes can connect, and they can already read the state dir).
"""

from __future__ import annotations

import hmac
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from coral_ebpf.errors import ConfigError

TOKEN_METADATA_KEY = "authorization"


def read_token(path: Path, key: str) -> str:
    """The bearer token in `path`, which must be a regular file of mode 0600 (or stricter)."""
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read token file {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{key}: token file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{key}: token file {path} has mode {stat.S_IMODE(info.st_mode):04o}; a token others can read is no secret",
            f"chmod 600 {path}",
        )
    if len(text) < 16:
        raise ConfigError(f"{key}: the token in {path} is shorter than 16 characters", "use e.g. openssl rand -hex 32")
    return text


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class ServerTls:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: clients must present a certificate it signed (mTLS)

    def credentials(self, key_prefix: str) -> grpc.ServerCredentials:
        pair = (_read(self.key, f"{key_prefix}.key"), _read(self.cert, f"{key_prefix}.cert"))
        if self.client_ca is None:
            return grpc.ssl_server_credentials([pair])
        ca = _read(self.client_ca, f"{key_prefix}.client_ca")
        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=True)


@dataclass(frozen=True)
class ClientTls:
    ca: Path | None = None  # None: the system roots
    cert: Path | None = None  # client certificate, for an agent that requires mTLS
    key: Path | None = None
    server_name: str | None = None  # override the name checked against the certificate

    def credentials(self, key_prefix: str) -> grpc.ChannelCredentials:
        ca = _read(self.ca, f"{key_prefix}.ca") if self.ca else None
        cert = _read(self.cert, f"{key_prefix}.cert") if self.cert else None
        key = _read(self.key, f"{key_prefix}.key") if self.key else None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


class TokenCheck(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call whose `authorization` metadata is not `Bearer <token>` (UNAUTHENTICATED)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        supplied = dict(details.invocation_metadata or ()).get(TOKEN_METADATA_KEY, "")
        if hmac.compare_digest(str(supplied).encode(), self._expected):
            return continuation(details)
        return self._deny


def token_metadata(token: str | None) -> list[tuple[str, str]]:
    return [(TOKEN_METADATA_KEY, f"Bearer {token}")] if token else []
