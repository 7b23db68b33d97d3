"""`coral-ebpf mcp --colony` end to end: the SDK's own stdio MCP client against a real colony that
polls two real agents (fed by OTLP senders), every tool's answer checked against
`coral-ebpf query --colony ... --json` and `colony status --json`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.helpers.agent_process import CLI, REPO, call_failed, run_cli
from tests.helpers.fleet import TWO_AGENTS, TwoAgentFleet

AGENTS = TWO_AGENTS


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoAgentFleet]:
    with TwoAgentFleet(tmp_path_factory.mktemp("mcp-colony")).running() as fleet:
        yield fleet


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest, fleet: TwoAgentFleet) -> Iterator[None]:
    yield
    if call_failed(request.node):
        print(fleet.log_tails())


def call_tools(args: list[str], calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[Any], list[Any]]:
    """(tools listed, one CallToolResult per call) from one `coral-ebpf mcp ...` session over stdio."""

    async def session() -> tuple[list[Any], list[Any]]:
        server = StdioServerParameters(command=CLI[0], args=[*CLI[1:], "mcp", *args], cwd=str(REPO))
        async with stdio_client(server) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            listed = (await client.list_tools()).tools
            results = [await client.call_tool(name, arguments) for name, arguments in calls]
            return listed, results

    return asyncio.run(asyncio.wait_for(session(), 120))


def answer(result: Any) -> Any:
    assert not result.is_error, result.content
    return result.structured_content


def colony_cli(fleet: TwoAgentFleet, *args: str) -> Any:
    result = run_cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def steady(value: Any) -> Any:
    """`value` without the rates, which depend on the second a query ran (the window ends now)."""
    if isinstance(value, list):
        return [steady(item) for item in value]
    return {key: item for key, item in value.items() if key != "rate_per_s"}


def test_every_tool_answers_for_the_fleet_as_the_cli_does(fleet: TwoAgentFleet) -> None:
    config = str(fleet.colony.config_path)
    traces = fleet.colony.query("traces", "--limit", "100")
    failed_id = next(t["trace_id"] for t in traces if t["status"] == "ERROR")
    listed, results = call_tools(
        ["--colony", config],
        [
            ("list_agents", {}),
            ("list_services", {"window": "1h"}),
            ("red_summary", {"service": "shop", "window": "1h"}),
            ("red_summary", {"service": "shop", "window": "1h", "agent": "beta"}),
            ("slow_traces", {"window": "1h", "limit": 10}),
            ("failed_traces", {"window": "1h"}),
            ("get_trace", {"trace_id": failed_id}),
            ("agent_status", {}),
            ("compare_windows", {"service": "shop", "window": "1h"}),
            ("list_agents", {"state": "failing"}),
        ],
    )
    tools = {tool.name: tool for tool in listed}
    assert set(tools) == {
        "list_agents",
        "list_services",
        "red_summary",
        "slow_traces",
        "failed_traces",
        "get_trace",
        "agent_status",
        "compare_windows",
    }
    assert all(tool.annotations is not None and tool.annotations.read_only_hint for tool in listed)
    assert "agent" in tools["red_summary"].input_schema["properties"]
    agents, services, red, red_beta, slow, failed, trace, status, compared, failing = (answer(r) for r in results)

    colony_status = colony_cli(fleet, "colony", "status", "--config", config)
    by_id = {a["agent_id"]: a for a in colony_status["agents"]}
    assert [a["agent_id"] for a in agents["items"]] == list(AGENTS)
    for agent in agents["items"]:
        assert agent["state"] == "up" and agent["lag_rows"] == 0 and agent["last_error"] is None
        assert agent["address"] == by_id[agent["agent_id"]]["address"]
        assert agent["rows_stored"] == by_id[agent["agent_id"]]["rows_stored"]
        assert agent["last_seen"] is not None and agent["seconds_since_seen"] < 60
    assert agents["states"]["up"] == 2 and failing["items"] == []

    shop_cli = fleet.colony.query("http", "--service", "shop")
    (shop,) = [s for s in services["items"] if s["service"] == "shop"]
    (cart,) = [s for s in services["items"] if s["service"] == "cart"]
    for key in ("requests", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms"):
        assert shop[key] == shop_cli["overall"][key] == red["overall"][key], key
    assert (shop["requests"], shop["instances"], shop["instance_ids"]) == (75, 2, ["alpha", "beta"])
    assert {e["agent"]: e["requests"] for e in shop["agents"]} == {"alpha": 55, "beta": 20}
    assert (cart["requests"], cart["instance_ids"]) == (7, ["beta"])
    assert steady(red["by_agent"]) == steady(shop_cli["by_agent"])
    beta_cli = fleet.colony.query("http", "--service", "shop", "--agent", "beta")
    assert steady(red_beta["overall"]) == steady(beta_cli["overall"]) and red_beta["overall"]["requests"] == 20
    assert [e["agent"] for e in red_beta["by_agent"]] == ["beta"]

    cli_traces = {t["trace_id"]: t for t in traces}
    assert slow["total"] == len(cli_traces) == 5
    assert all(t["agents"] == cli_traces[t["trace_id"]]["agents"] for t in slow["items"])
    assert {a for t in slow["items"] for a in t["agents"]} == set(AGENTS)
    (failed_trace,) = failed["items"]
    assert failed_trace["trace_id"] == failed_id and failed_trace["agents"] == ["alpha"]

    cli_trace = colony_cli(
        fleet, "query", "traces", "--colony", config, "--trace-id", failed_id, "--format", "waterfall"
    )
    assert trace["spans"] == cli_trace["spans"] and trace["agents"] == ["alpha"]
    assert [s["agent"] for s in trace["spans"]] == ["alpha"] and trace["spans"][0]["error"] is True

    assert status["colony"]["running"] is True and status["colony"]["polling"] is True
    assert status["colony"]["pid"] == colony_status["colony"]["pid"]
    assert [(a["agent_id"], a["state"]) for a in status["agents"]] == [("alpha", "up"), ("beta", "up")]
    assert status["database"]["rows"] == colony_status["database"]["rows"]

    assert compared["now"]["overall"]["requests"] == 75 and compared["before"]["overall"]["requests"] == 0
    assert [e["agent"] for e in compared["now"]["by_agent"]] == list(AGENTS)


def test_colony_arguments_are_checked(fleet: TwoAgentFleet) -> None:
    _, results = call_tools(
        ["--colony", str(fleet.colony.config_path)],
        [("list_agents", {"state": "sleeping"}), ("red_summary", {"window": "1h", "agent": "nobody"})],
    )
    bad_state, nobody = results
    assert bad_state.is_error
    assert answer(nobody)["overall"]["requests"] == 0 and answer(nobody)["by_agent"] == []


def test_an_agent_server_offers_no_colony_tools(fleet: TwoAgentFleet) -> None:
    agent = fleet.agents["alpha"]
    listed, results = call_tools(["--config", str(agent.config_path)], [("list_services", {"window": "1h"})])
    names = {tool.name for tool in listed}
    assert "list_agents" not in names and "agent_status" in names
    assert all("agent" not in tool.input_schema.get("properties", {}) for tool in listed)
    assert {s["service"] for s in answer(results[0])["items"]} == {"shop"}
