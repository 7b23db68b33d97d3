"""The control socket's client: `coral-ebpf status` and `coral-ebpf query` talking to a running agent.

Standard library only (no aiohttp), so the commands that only ask the agent start fast.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

from coral_ebpf.errors import AgentNotRunningError, CoralError
from coral_ebpf.safe_paths import owner_name


def socket_is_live(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return True  # exists and is something we cannot judge: do not remove it
    finally:
        probe.close()
    return True


_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class UntrustedAgentError(CoralError):
    """The process serving the control socket is not run by root nor by the user running the CLI."""


def check_peer(sock: socket.socket, path: Path) -> None:
    """Trust the server only when its process runs as root or as us (SO_PEERCRED, set by the kernel).

    A user able to replace the socket file could otherwise serve a forged status document.
    """
    pid, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    if uid not in (0, os.geteuid()):
        owner = owner_name(uid)
        raise UntrustedAgentError(
            f"the control socket {path} is served by process {pid} running as {owner}, not by root or you: "
            "refusing to trust its answer",
            "someone may have replaced the socket; check its directory and restart the agent (sudo coral-ebpf start)",
        )


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
            check_peer(sock, self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class ControlClient:
    """Talks to a running agent. Raises AgentNotRunningError when nobody answers."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout

    def _request(self, method: str, route: str, body: Any = None) -> Any:
        connection = _UnixHTTPConnection(self.path, self.timeout)
        payload = None if body is None else json.dumps(body)
        try:
            connection.request(method, route, body=payload, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise AgentNotRunningError(
                f"no coral-ebpf agent answers on {self.path}",
                "start it with 'sudo coral-ebpf start', or pass the --config it runs with",
            ) from exc
        except PermissionError as exc:
            raise AgentNotRunningError(
                f"permission denied on the control socket {self.path}", "run the command as root (sudo)"
            ) from exc
        finally:
            connection.close()
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise CoralError(f"the agent sent a response that is not JSON (HTTP {response.status})") from exc
        if response.status != 200:
            raise CoralError(document.get("error", f"HTTP {response.status}"), document.get("hint", ""))
        return document

    def available(self) -> bool:
        return self.path.exists() and socket_is_live(self.path)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/v1/status")
        return result

    def query(self, kind: str, params: dict[str, Any]) -> Any:
        return self._request("POST", "/v1/query", {"kind": kind, "params": params})["result"]
