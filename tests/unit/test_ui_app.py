"""The web view's aiohttp app on a real database file: mounted under a parent's prefix, and on its own."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from coral_ebpf.agent.config import load_config
from coral_ebpf.cli.backend import AgentBackend
from coral_ebpf.ui.app import build_ui_app
from tests.helpers.beyla_otlp import (
    SECOND_NS,
    CumulativeHistogram,
    beyla_resource,
    http_server_attributes,
    metrics_request,
)
from tests.helpers.datapath import data_path


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> AgentBackend:
    root = tmp_path_factory.mktemp("ui-app")
    now = time.time_ns()
    resource = beyla_resource("mounted", pid=12)
    with data_path(root / "state") as (storage, processor):
        histogram = CumulativeHistogram("http.server.request.duration", start_ns=now - 100 * SECOND_NS)
        histogram.record(http_server_attributes(resource, "GET", "/m", 200), 0.02, 9)
        processor.consume_metrics(metrics_request(resource, [histogram.export(now - 5 * SECOND_NS)]))
        storage.flush()
    config = root / "config.yaml"
    config.write_text(f"state_dir: {root / 'state'}\ncontrol:\n  socket: {root / 'none.sock'}\n")
    return AgentBackend(load_config(str(config)))


def fetch(app: web.Application, *requests: tuple[str, dict[str, str]]) -> list[tuple[int, str, Any]]:
    async def run() -> list[tuple[int, str, Any]]:
        async with TestClient(TestServer(app)) as client:
            answers = []
            for path, headers in requests:
                response = await client.get(path, headers=headers)
                text = await response.text()
                document = await response.json() if response.content_type == "application/json" else None
                answers.append((response.status, text, document))
            return answers

    return asyncio.run(run())


def test_mounted_under_a_prefix(backend: AgentBackend) -> None:
    parent = web.Application()
    parent.add_subapp("/ui", build_ui_app(backend))
    page, services, script, missing = fetch(
        parent,
        ("/ui/", {}),
        ("/ui/api/services?window=15m", {}),
        ("/ui/static/app.js", {}),
        ("/ui/static/../app.py", {}),
    )
    assert page[0] == 200 and 'data-base="/ui"' in page[1] and 'src="/ui/static/app.js"' in page[1]
    assert services[0] == 200
    (row,) = services[2]["items"]
    assert (row["service"], row["requests"], row["engine"]) == ("mounted", 9, "beyla")
    assert script[0] == 200 and "data-ready" in script[1]
    assert missing[0] == 404


def test_token_and_errors(backend: AgentBackend) -> None:
    app = build_ui_app(backend, token="a-long-enough-random-token")
    without, wrong, header, bad_window, no_trace = fetch(
        app,
        ("/api/services", {}),
        ("/api/services", {"Authorization": "Bearer nope"}),
        ("/api/services", {"Authorization": "Bearer a-long-enough-random-token"}),
        ("/api/services?window=soon&token=a-long-enough-random-token", {}),
        ("/api/trace/" + "ab" * 16, {"Authorization": "Bearer a-long-enough-random-token"}),
    )
    assert (without[0], wrong[0], header[0]) == (401, 401, 200)
    assert bad_window[0] == 400 and "window" in bad_window[2]["error"]
    assert no_trace[0] == 400 and "no stored trace" in no_trace[2]["error"]
