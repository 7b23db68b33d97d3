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


def test_a_stopped_colony_answers_from_its_file(tmp_path: Path) -> None:
    from coral_ebpf.colony.store import ColonyStore
    from tests.helpers.pull_rows import http_row

    store = ColonyStore(tmp_path / "state" / "colony.duckdb")
    for agent_id, counts in (("a", [3, 0, 0, 0, 0, 0, 0, 0, 0]), ("b", [0, 2, 0, 0, 0, 0, 0, 0, 0])):
        store.reset_session(agent_id, "s1")
        store.store(agent_id, "s1", {"http": [http_row(1, counts, agent_id=agent_id)]}, {"http": 1})
        store.record_poll(agent_id, "127.0.0.1:1", last_success=time.time(), consecutive_failures=0, lag_rows=0)
    store.close()
    config = tmp_path / "colony.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\ncontrol_socket: {tmp_path / 'none.sock'}\n")

    async def session() -> list[Any]:
        args = [*CLI[1:], "mcp", "--colony", str(config)]
        server = StdioServerParameters(command=CLI[0], args=args, cwd=str(REPO))
        async with stdio_client(server) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            calls: list[tuple[str, dict[str, Any]]] = [("list_services", {}), ("list_agents", {}), ("agent_status", {})]
            return [await client.call_tool(name, arguments) for name, arguments in calls]

    services, agents, status = asyncio.run(asyncio.wait_for(session(), 120))
    (shop,) = services.structured_content["items"]
    assert (shop["requests"], shop["instance_ids"]) == (5, ["a", "b"])
    assert [(a["agent_id"], a["state"]) for a in agents.structured_content["items"]] == [("a", "up"), ("b", "up")]
    assert status.structured_content["colony"]["running"] is False


def test_mcp_colony_refuses_an_agent_config(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run(
        [*CLI, "mcp", "--colony", "--config", str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and "with --colony give the colony's: --colony FILE" in result.stderr
