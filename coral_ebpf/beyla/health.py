"""Beyla's `/healthz` (v3.20+), probed on the loopback port the agent chose for it.

Beyla answers `200 {"schema_version":1,"now_unix_ns":…,"process_uptime_ns":…}`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str
    uptime_ns: int | None = None


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (Beyla binds it a moment later; a clash is retried)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check(port: int, timeout: float) -> HealthResult:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        body = response.read(4096)
    except (OSError, http.client.HTTPException) as exc:
        return HealthResult(False, f"GET /healthz on 127.0.0.1:{port}: {exc}")
    finally:
        connection.close()
    if response.status != 200:
        return HealthResult(False, f"GET /healthz answered {response.status}")
    try:
        document = json.loads(body)
        uptime = int(document["process_uptime_ns"])
    except (ValueError, KeyError, TypeError):
        return HealthResult(True, "200 without Beyla's JSON body")
    return HealthResult(True, "ok", uptime)
