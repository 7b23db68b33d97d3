"""How long the web view takes: the services page (20 services) and a 200-span trace page.

Builds a real DuckDB file (20 services' HTTP metrics, one 200-span trace), serves `coral_ebpf.ui`
on loopback inside a private network namespace (no agent: the file is read read-only, as
`coral-ebpf ui` does when none runs), then measures
- server side: the page shell plus the /api JSON the page fetches, median of ROUNDS requests;
- in Chromium (headless, driven over the DevTools protocol): from navigation until the page has
  drawn its data (the page's own `performance.now()` at that moment), median of BROWSER_ROUNDS.
Needs root (the namespace) and Debian's chromium.
Run: sudo .venv/bin/python bench/ui.py   (last line: the figure: the slowest of the four medians)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from coral_ebpf.agent.config import parse_config_text  # noqa: E402
from coral_ebpf.cli.backend import AgentBackend  # noqa: E402
from coral_ebpf.ui.app import build_ui_app  # noqa: E402
from tests.helpers.beyla_otlp import (  # noqa: E402
    SECOND_NS,
    CumulativeHistogram,
    beyla_resource,
    http_server_attributes,
    http_server_span,
    metrics_request,
    sql_client_span,
    trace_request,
)
from tests.helpers.datapath import data_path  # noqa: E402
from tests.helpers.netns import enter_private_netns  # noqa: E402
from tests.helpers.processes import free_port  # noqa: E402

SERVICES = 20
SPANS = 200
ROUNDS = 30
BROWSER_ROUNDS = 5
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def build_data(state_dir: Path) -> str:
    now = time.time_ns()
    trace_id = os.urandom(16)
    with data_path(state_dir) as (storage, processor):
        for index in range(SERVICES):
            resource = beyla_resource(f"svc-{index:02d}", pid=1000 + index)
            histogram = CumulativeHistogram("http.server.request.duration", start_ns=now - 600 * SECOND_NS)
            for minute in range(5):
                for route in ("/a", "/b", "/c"):
                    histogram.record(http_server_attributes(resource, "GET", route, 200), 0.01 * (index + 1), 50)
                    histogram.record(http_server_attributes(resource, "GET", route, 500), 0.2, 1)
                export = histogram.export(now - (300 - 60 * minute) * SECOND_NS)
                processor.consume_metrics(metrics_request(resource, [export]))
        resource = beyla_resource("svc-00", pid=1000)
        root = os.urandom(8)
        start = now - 30 * SECOND_NS
        spans = [http_server_span(trace_id, root, start_ns=start, duration_ns=2_000_000_000)]
        for index in range(SPANS - 1):
            spans.append(
                sql_client_span(
                    trace_id, os.urandom(8), root, start_ns=start + index * 9_000_000, duration_ns=8_000_000
                )
            )
        processor.consume_traces(trace_request(resource, spans))
        storage.flush()
    return trace_id.hex()


async def server_side(session: aiohttp.ClientSession, urls: list[str]) -> float:
    """Median ms to fetch all of `urls` (a page shell and its JSON) one after another."""
    timings = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for url in urls:
            async with session.get(url) as response:
                assert response.status == 200, (url, response.status, await response.text())
                await response.read()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


class DevTools:
    """Just enough of the Chrome DevTools protocol: navigate, evaluate."""

    def __init__(self, websocket: aiohttp.ClientWebSocketResponse) -> None:
        self.websocket = websocket
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.websocket.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = json.loads((await self.websocket.receive()).data)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")


async def in_browser(session: aiohttp.ClientSession, chromium: str, url: str) -> float:
    """Median ms from navigation until the page set data-ready (its own performance.now())."""
    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--remote-debugging-port={port}",
                "--window-size=1280,800",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helpers (zygote, crashpad) share the group, ended with it
        )
        try:
            deadline = time.monotonic() + 30
            targets: list[dict[str, Any]] = []
            while not targets:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                        targets = [t for t in await response.json() if t.get("type") == "page"]
                except aiohttp.ClientError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            async with session.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0) as websocket:
                tools = DevTools(websocket)
                timings = []
                for _ in range(BROWSER_ROUNDS):
                    await tools.call("Page.navigate", url=url)
                    ready = None
                    deadline = time.monotonic() + 30
                    while ready is None:
                        ready = await tools.evaluate(
                            "document.body && document.body.dataset.ready === '1' && "
                            "!document.getElementById('error') ? Number(document.body.dataset.readyMs) : null"
                        )
                        if ready is None:
                            if time.monotonic() > deadline:
                                raise RuntimeError(f"{url} did not finish drawing in 30 s")
                            await asyncio.sleep(0.01)
                    timings.append(float(ready))
                return statistics.median(timings)
        finally:
            end_process_group(browser)


def end_process_group(leader: subprocess.Popen[bytes]) -> None:
    """SIGTERM the group, then SIGKILL whatever is left, and wait until none of it runs: Chromium's
    helpers outlive the browser process for a moment and still write into the profile directory,
    which then cannot be removed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGTERM)
    try:
        leader.wait(10)
    except subprocess.TimeoutExpired:
        leader.kill()
        leader.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(leader.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.05)


async def run(state_dir: Path, trace_id: str, chromium: str | None) -> None:
    config = parse_config_text(f"state_dir: {state_dir}\ncontrol:\n  socket: {state_dir}/no-agent.sock\n")
    runner = web.AppRunner(build_ui_app(AgentBackend(config)), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    pages = {
        f"services page ({SERVICES} services)": (f"{base}/?window=1h", [f"{base}/", f"{base}/api/services?window=1h"]),
        f"trace page ({SPANS} spans)": (
            f"{base}/trace/{trace_id}",
            [f"{base}/trace/{trace_id}", f"{base}/api/trace/{trace_id}"],
        ),
    }
    figures = []
    try:
        async with aiohttp.ClientSession() as session:
            for name, (url, fetches) in pages.items():
                server_ms = await server_side(session, fetches)
                figures.append(server_ms)
                line = f"{name}: server {server_ms:.1f} ms median of {ROUNDS}"
                if chromium:
                    browser_ms = await in_browser(session, chromium, url)
                    figures.append(browser_ms)
                    line += f", Chromium until drawn {browser_ms:.1f} ms median of {BROWSER_ROUNDS}"
                print(line)
    finally:
        await runner.cleanup()
    print("(2 shared cores; indicative; target < 300 ms each)")
    print(f"ui: {max(figures):.1f} ms")


def main() -> None:
    enter_private_netns()
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium is not installed (make system-deps): measuring the server side only")
    with tempfile.TemporaryDirectory() as root:
        state_dir = Path(root) / "state"
        trace_id = build_data(state_dir)
        asyncio.run(run(state_dir, trace_id, chromium))


if __name__ == "__main__":
    main()
