"""`coral-ebpf mcp` with no agent running: the SDK's stdio client, answers read from the file read-only."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from coral_ebpf.agent.config import load_config
from coral_ebpf.cli.query import execute
from tests.helpers.agent_process import CLI, REPO
from tests.helpers.beyla_otlp import (
    SECOND_NS,
    CumulativeHistogram,
    beyla_resource,
    http_server_attributes,
    metrics_request,
)
from tests.helpers.datapath import data_path


def call(config: Path, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    async def session() -> list[Any]:
        server = StdioServerParameters(command=CLI[0], args=[*CLI[1:], "mcp", "--config", str(config)], cwd=str(REPO))
        async with stdio_client(server) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            return [await client.call_tool(name, arguments) for name, arguments in calls]

    return asyncio.run(asyncio.wait_for(session(), 120))


def test_answers_from_the_file_when_no_agent_runs(tmp_path: Path) -> None:
    now = time.time_ns()
    resource = beyla_resource("offline", pid=os.getpid())
    with data_path(tmp_path / "state") as (storage, processor):
        histogram = CumulativeHistogram("http.server.request.duration", start_ns=now - 100 * SECOND_NS)
        histogram.record(http_server_attributes(resource, "GET", "/x", 200), 0.02, 7)
        processor.consume_metrics(metrics_request(resource, [histogram.export(now - 5 * SECOND_NS)]))
        storage.flush()
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\ncontrol:\n  socket: {tmp_path / 'none.sock'}\n")
    red, status, missing = call(
        config, [("red_summary", {"window": "15m"}), ("agent_status", {}), ("get_trace", {"trace_id": "ab" * 16})]
    )
    assert not red.is_error and not status.is_error
    (row,) = red.structured_content["items"]
    (cli_row,) = execute(load_config(str(config)), "http", {"since": "15m"})["rows"]
    assert row.pop("rate_per_s") == pytest.approx(cli_row.pop("rate_per_s"), rel=0.05)  # "now" moved on
    assert cli_row.pop("instance") == f"testhost:{os.getpid()}"  # the CLI's default rows tell instances apart
    assert row == cli_row and row["requests"] == 7
    assert status.structured_content["agent"]["running"] is False
    assert "no coral-ebpf agent" in status.structured_content["agent"]["error"]
    assert missing.is_error and "no stored trace" in missing.content[0].text
