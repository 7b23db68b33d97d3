"""The web view as an agent part: `build_ui_app` served on `ui.endpoint` from its own thread."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from aiohttp import web

from coral_ebpf.ask.backend import Backend
from coral_ebpf.errors import CoralError
from coral_ebpf.ui.app import build_ui_app
from coral_ebpf.units import parse_endpoint


class UiServer:
    """Serves the read-only web view on one TCP endpoint (a Component)."""

    name = "ui"

    def __init__(self, endpoint: str, backend: Backend, token: str | None) -> None:
        self.endpoint = endpoint
        self._app = build_ui_app(backend, token=token)
        self._token = token is not None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._address = ""
        self._since = time.time()

    def start(self) -> None:
        host, port = parse_endpoint(self.endpoint)
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            runner = web.AppRunner(self._app, access_log=None)
            try:
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, host, port)
                loop.run_until_complete(site.start())
                bound = runner.addresses[0] if runner.addresses else (host, port)
                self._address = f"{bound[0]}:{bound[1]}"
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.run_until_complete(runner.cleanup())
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="ui", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise CoralError(f"ui.endpoint {self.endpoint}: cannot listen: {failure[0]}")
        self._since = time.time()

    def stop(self, timeout: float) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        return {"address": self._address, "token_required": self._token, "since": self._since}
