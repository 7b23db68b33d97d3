"""The local control socket, server side: how `coral-ebpf status` and `coral-ebpf query` reach a running agent.

HTTP over a unix socket (mode 0600, so root only), served by aiohttp on its own thread.
DuckDB lets one process own the database file, so while the agent runs, queries are executed
inside the agent on a reader connection and only the JSON result crosses the socket.

Routes:
  GET  /v1/status   the agent's status document (agent/status.py, turned into JSON here)
  POST /v1/query    {"kind": "http"|"grpc"|"sql"|"traces", "params": {...}} -> {"result": ...}

The client is in control_client.py (standard library only, so the CLI starts fast).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from coral_ebpf.agent.control_client import socket_is_live
from coral_ebpf.errors import CoralError
from coral_ebpf.safe_paths import prepare_private_dir

log = logging.getLogger(__name__)


class JsonDocument(Protocol):
    """What the status provider returns: the agent's `StatusDocument`, or the colony's document."""

    def to_json(self) -> dict[str, Any]: ...


StatusProvider = Callable[[], JsonDocument]
QueryExecutor = Callable[[str, dict[str, Any]], Any]


class ControlSocketInUseError(CoralError):
    pass


def check_control_socket_free(path: Path) -> bool:
    """Raise ControlSocketInUseError when `path` is not a socket or another agent answers on it;
    return True when a stale socket file is left there (safe to replace)."""
    if not (path.exists() or path.is_symlink()):
        return False
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise ControlSocketInUseError(
            f"control socket path {path} exists and is not a socket",
            "remove it or set control.socket to another path",
        )
    if socket_is_live(path):
        raise ControlSocketInUseError(
            f"another coral-ebpf agent is already running (it answers on {path})",
            "stop it first, or give this one a different control.socket and state_dir",
        )
    return True


def bind_control_socket(path: Path) -> socket.socket:
    """Bind a unix stream socket at `path` with mode 0600, replacing a stale one.

    Refuses when another agent answers on it. The parent directory is created 0700; an existing
    one must not be a symlink nor owned by, or lie under a directory changeable by, another
    non-root user (`safe_paths`): such a user could swap the socket for their own.
    """
    prepare_private_dir(path.parent, "control socket directory", chmod=False)
    if check_control_socket_free(path):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Connecting needs write permission on the socket file, which the default umask (022)
        # already withholds from others; chmod narrows it to the owner before anyone can use it.
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise CoralError(f"cannot create control socket {path}: {exc.strerror}") from exc
    return sock


class ControlServer:
    """Serves status and queries on the control socket from a background thread."""

    name = "control"

    def __init__(self, path: Path, status: StatusProvider, query: QueryExecutor) -> None:
        self.path = path
        self._status = status
        self._query = query
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._requests = 0

    async def _handle_status(self, request: web.Request) -> web.Response:
        self._requests += 1
        loop = asyncio.get_running_loop()
        document = await loop.run_in_executor(None, lambda: self._status().to_json())
        return web.json_response(document, dumps=lambda v: json.dumps(v, default=str))

    async def _handle_query(self, request: web.Request) -> web.Response:
        self._requests += 1
        try:
            body = await request.json()
            kind = body["kind"]
            params = body.get("params", {})
            if not isinstance(kind, str) or not isinstance(params, dict):
                raise TypeError("kind must be a string and params an object")
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad query request: {exc}"}, status=400)
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, self._query, kind, params)
        except CoralError as exc:
            return web.json_response({"error": exc.message, "hint": exc.hint}, status=400)
        except Exception as exc:
            log.exception("query failed", extra={"fields": {"kind": kind}})
            return web.json_response({"error": f"query failed: {exc}"}, status=500)
        return web.json_response({"result": result}, dumps=lambda v: json.dumps(v, default=str))

    def start(self) -> None:
        sock = bind_control_socket(self.path)
        app = web.Application()
        app.router.add_get("/v1/status", self._handle_status)
        app.router.add_post("/v1/query", self._handle_query)
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                runner = web.AppRunner(app, access_log=None)
                loop.run_until_complete(runner.setup())
                loop.run_until_complete(web.SockSite(runner, sock).start())
                self._runner = runner
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="control-socket", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            sock.close()
            raise CoralError(f"control socket {self.path} failed to start: {failure[0]}")

    def stop(self, timeout: float) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def status(self) -> dict[str, Any]:
        return {"socket": str(self.path), "requests": self._requests}
