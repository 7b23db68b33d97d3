"""`coral-ebpf mcp` end to end: the SDK's own MCP client over stdio, a real `coral-ebpf start` fed through
OTLP/HTTP, and every tool's answer checked against `coral-ebpf query ... --json` (and `status --json`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.helpers.agent_process import CLI, REPO, AgentProcess, call_failed
from tests.helpers.known_data import FAILED_TRACE, SLOW_TRACE, feed

SETTINGS = {"storage": {"flush_interval": "200ms"}, "red": {"export_interval": "1s"}}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    running = AgentProcess(tmp_path_factory.mktemp("agent-mcp"), SETTINGS)
    try:
        running.start()
        feed(running.http_address())
        running.query_until("http", "shop", lambda rows: sum(r["requests"] for r in rows) == 100, timeout=60)
        yield running
        running.stop()
    finally:
        running.kill()


@pytest.fixture(autouse=True)
def _agent_log_on_failure(request: pytest.FixtureRequest, agent: AgentProcess) -> Iterator[None]:
    yield
    if call_failed(request.node):
        print(agent.log_tail(150))


def call_tools(agent: AgentProcess, calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[Any], list[Any]]:
    """(tools listed, one CallToolResult per call) from one `coral-ebpf mcp` session over stdio."""

    async def session() -> tuple[list[Any], list[Any]]:
        server = StdioServerParameters(
            command=CLI[0], args=[*CLI[1:], "mcp", "--config", str(agent.config_path)], cwd=str(REPO)
        )
        async with stdio_client(server) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            listed = (await client.list_tools()).tools
            results = [await client.call_tool(name, arguments) for name, arguments in calls]
            return listed, results

    return asyncio.run(asyncio.wait_for(session(), 120))


def answer(result: Any) -> Any:
    assert not result.is_error, result.content
    return result.structured_content


def test_every_tool_answers_as_the_cli_does(agent: AgentProcess) -> None:
    listed, results = call_tools(
        agent,
        [
            ("list_services", {"window": "1h"}),
            ("red_summary", {"service": "shop", "window": "1h"}),
            ("red_summary", {"service": "shop", "window": "1h", "group_by": "status"}),
            # The agent's built-in engine may trace this host's own HTTP calls too: look at shop's.
            ("slow_traces", {"service": "shop", "window": "1h", "limit": 5}),
            ("failed_traces", {"service": "shop", "window": "1h"}),
            ("get_trace", {"trace_id": SLOW_TRACE.hex()}),
            ("agent_status", {}),
            ("compare_windows", {"service": "shop", "window": "1h"}),
        ],
    )
    tools = {tool.name: tool for tool in listed}
    assert set(tools) == {
        "list_services",
        "red_summary",
        "slow_traces",
        "failed_traces",
        "get_trace",
        "agent_status",
        "compare_windows",
    }
    for tool in listed:
        assert tool.input_schema["type"] == "object" and tool.description
        assert tool.annotations is not None and tool.annotations.read_only_hint
    assert tools["red_summary"].input_schema["properties"]["group_by"]["enum"] == ["route", "method", "status"]
    services, red, by_status, slow, failed, trace, status, compared = (answer(r) for r in results)

    cli_rows = agent.cli_json("query", "http", "--service", "shop", "--since", "1h")
    (cli_row,) = cli_rows
    (shop,) = [item for item in services["items"] if item["service"] == "shop"]
    for key in ("requests", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms"):
        assert shop[key] == cli_row[key], key
        assert red["items"][0][key] == cli_row[key], key
    assert (shop["requests"], shop["errors"], shop["engine"], shop["instances"]) == (100, 10, "beyla", 1)
    assert {row["status_code"]: row["requests"] for row in by_status["items"]} == {200: 90, 500: 10}

    cli_traces = {t["trace_id"]: t for t in agent.cli_json("query", "traces", "--service", "shop", "--since", "1h")}
    assert [t["trace_id"] for t in slow["items"]] == [SLOW_TRACE.hex(), FAILED_TRACE.hex()]
    assert slow["items"][0]["duration_ms"] == cli_traces[SLOW_TRACE.hex()]["duration_ms"] == pytest.approx(900.0)
    assert [t["trace_id"] for t in failed["items"]] == [FAILED_TRACE.hex()]
    assert failed["items"][0]["status"] == cli_traces[FAILED_TRACE.hex()]["status"] == "ERROR"

    cli_trace = agent.cli_json("query", "traces", "--trace-id", SLOW_TRACE.hex(), "--format", "waterfall")
    assert trace["spans"] == cli_trace["spans"] and trace["truncated"] is False
    assert [(s["depth"], s["offset_ms"], s["duration_ms"]) for s in trace["spans"]] == [
        (0, 0.0, 900.0),
        (1, 5.0, 700.0),
    ]

    cli_status = agent.cli_json("status")
    assert status["agent"]["running"] is True and status["agent"]["pid"] == cli_status["agent"]["pid"]
    assert status["probe"]["verdicts"] == cli_status["probe"].get("summary", {})
    assert status["beyla"]["state"] == cli_status["beyla"]["state"]
    assert {name: part["state"] for name, part in status["parts"].items()} == {
        name: body["state"] for name, body in cli_status.items() if isinstance(body, dict) and "state" in body
    }

    (got_slower,) = compared["slower"]["items"]
    assert got_slower["route"] == "/items" and got_slower["p99_ms"]["before"] < 5
    assert got_slower["p99_ms"]["now"] > 200
    (more_errors,) = compared["more_error_prone"]["items"]
    assert more_errors["error_rate"] == {"now": 0.1, "before": 0.0}
    assert compared["before"]["overall"]["requests"] == 100 == compared["now"]["overall"]["requests"]


def test_bad_arguments_are_tool_errors_that_say_why(agent: AgentProcess) -> None:
    _, results = call_tools(
        agent,
        [
            ("red_summary", {"window": "soon"}),
            ("get_trace", {"trace_id": "nothex"}),
            ("get_trace", {"trace_id": "0" * 32}),
            ("red_summary", {"protocol": "smtp"}),
            ("list_services", {"limit": 500}),
        ],
    )
    texts = []
    for result in results:
        assert result.is_error
        texts.append(" ".join(getattr(part, "text", "") for part in result.content))
    assert "since" in texts[0] and "duration" in texts[0]
    assert "trace id" in texts[1]
    assert "no stored trace" in texts[2]
    assert "protocol" in texts[3]
    assert "limit" in texts[4]
