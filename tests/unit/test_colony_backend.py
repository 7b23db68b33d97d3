"""The ask tools over a colony's store (a real DuckDB file, two agents' rows): every answer names
its agents, services list per-agent instances, `agent` narrows, and the colony's view of its agents."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from coral_ebpf.ask import tools
from coral_ebpf.ask.backend import AgentState, FleetBackend, InAgentBackend
from coral_ebpf.colony.backend import ColonyBackend, agent_views
from coral_ebpf.colony.queries import fleet_executor
from coral_ebpf.colony.store import ColonyStore, status_document
from coral_ebpf.query.params import QueryError
from tests.helpers.pull_rows import http_row, span_row

TRACE = 0xABCDEF0123456789ABCDEF0123456789


@pytest.fixture
def store(tmp_path: Path) -> ColonyStore:
    store = ColonyStore(tmp_path / "colony.duckdb")
    for agent_id, counts, span_id in (("a", [4, 0, 0, 0, 0, 0, 0, 0, 0], 1), ("b", [0, 0, 0, 0, 0, 0, 0, 0, 6], 2)):
        store.reset_session(agent_id, "s1")
        rows = {
            "http": [http_row(1, counts, agent_id=agent_id)],
            "traces": [span_row(1, trace_id=TRACE, span_id=span_id, agent_id=agent_id)],
        }
        store.store(agent_id, "s1", rows, {"http": 1, "traces": 1})
    now = time.time()
    store.record_poll("a", "127.0.0.1:1", last_attempt=now, last_success=now, consecutive_failures=0, lag_rows=0)
    store.record_poll("b", "127.0.0.1:2", last_attempt=now, last_success=now - 30, consecutive_failures=3)
    return store


def _backend(store: ColonyStore, tmp_path: Path) -> ColonyBackend:
    def status() -> dict[str, Any]:
        cursor = store.cursor()
        try:
            document = status_document(cursor, tmp_path / "colony.duckdb")
        finally:
            cursor.close()
        document["colony"] = {"agents_configured": ["a", "b", "c"], "polling": True, "version": "test"}
        return document

    return ColonyBackend(fleet_executor(store.cursor), status)


def test_services_list_each_agent_as_an_instance(store: ColonyStore, tmp_path: Path) -> None:
    backend = _backend(store, tmp_path)
    assert isinstance(backend, FleetBackend)
    (shop,) = tools.list_services(backend, window="1h")["items"]
    assert (shop["service"], shop["requests"], shop["instances"], shop["instance_ids"]) == ("shop", 10, 2, ["a", "b"])
    assert [(e["agent"], e["requests"]) for e in shop["agents"]] == [("a", 4), ("b", 6)]
    (only_b,) = tools.list_services(backend, window="1h", agent="b")["items"]
    assert (only_b["requests"], only_b["instance_ids"]) == (6, ["b"])
    assert tools.list_services(backend, window="1h", agent="z*")["items"] == []


def test_red_and_traces_name_their_agents(store: ColonyStore, tmp_path: Path) -> None:
    backend = _backend(store, tmp_path)
    red = tools.red_summary(backend, window="1h")
    assert red["overall"]["requests"] == 10
    assert [(e["agent"], e["requests"]) for e in red["by_agent"]] == [("a", 4), ("b", 6)]
    assert tools.red_summary(backend, window="1h", agent="a")["overall"]["requests"] == 4
    (failed,) = tools.failed_traces(backend, window="1h")["items"]
    assert failed["agents"] == ["a", "b"]
    # A trace one of whose spans agent a stored; it still names every agent that holds a part of it.
    assert tools.failed_traces(backend, window="1h", agent="a")["items"][0]["agents"] == ["a", "b"]
    assert tools.failed_traces(backend, window="1h", agent="z")["items"] == []
    trace = tools.get_trace(backend, f"{TRACE:032x}")
    assert trace["agents"] == ["a", "b"] and sorted(s["agent"] for s in trace["spans"]) == ["a", "b"]
    compared = tools.compare_windows(backend, window="1h")
    assert [e["agent"] for e in compared["now"]["by_agent"]] == ["a", "b"]


def test_agent_status_is_the_colonys_view_of_its_agents(store: ColonyStore, tmp_path: Path) -> None:
    backend = _backend(store, tmp_path)
    status = tools.agent_status(backend)
    assert status["colony"]["running"] is True and status["colony"]["polling"] is True
    by_id = {a["agent_id"]: a for a in status["agents"]}
    assert {i: a["state"] for i, a in by_id.items()} == {"a": "up", "b": "failing", "c": "pending"}
    assert by_id["b"]["seconds_since_seen"] == pytest.approx(30, abs=5) and by_id["b"]["consecutive_failures"] == 3
    assert status["states"] == {"up": 1, "failing": 1, "unreachable": 0, "pending": 1}
    listed = tools.list_agents(backend, state="failing")
    assert [a["agent_id"] for a in listed["items"]] == ["b"] and listed["total"] == 1
    with pytest.raises(QueryError, match="state: 'down' is not one of up, failing"):
        tools.list_agents(backend, state="down")


def test_an_agent_server_refuses_what_only_a_colony_has(store: ColonyStore, tmp_path: Path) -> None:
    one_agent = InAgentBackend(fleet_executor(store.cursor), dict)
    assert not isinstance(one_agent, FleetBackend)
    with pytest.raises(QueryError, match="agent: 'a' selects one agent of a colony"):
        tools.red_summary(one_agent, window="1h", agent="a")
    with pytest.raises(QueryError, match="list_agents: this server answers for one agent"):
        tools.list_agents(one_agent)


def test_agent_states_follow_the_polls() -> None:
    now = 1000.0
    document = {
        "agents": [
            {"agent_id": "never", "consecutive_failures": 2, "last_success": None},
            {"agent_id": "ok", "consecutive_failures": 0, "last_success": 990.0, "gaps": {"open": 1}},
        ],
        "colony": {"agents_configured": ["new", "never", "ok"]},
    }
    views = {v.agent_id: v for v in agent_views(document, now=now)}
    assert {i: v.state for i, v in views.items()} == {
        "never": AgentState.UNREACHABLE,
        "new": AgentState.PENDING,
        "ok": AgentState.UP,
    }
    assert views["ok"].seconds_since_seen == 10.0 and views["ok"].open_gaps == 1


def test_colony_config_has_the_ui_switch(tmp_path: Path) -> None:
    from coral_ebpf.colony.settings import load_colony_config
    from coral_ebpf.errors import ConfigError

    path = tmp_path / "colony.yaml"
    path.write_text("ui: {enabled: false}\n")
    assert load_colony_config(path).ui.enabled is False
    path.write_text("state_dir: /tmp/x\n")
    assert load_colony_config(path).ui.enabled is True
    path.write_text("ui: {enable: false}\n")
    with pytest.raises(ConfigError, match="enable"):
        load_colony_config(path)


def test_ui_colony_serves_a_stopped_colonys_file(store: ColonyStore, tmp_path: Path) -> None:
    import json
    import socket
    import subprocess
    import urllib.error
    import urllib.request

    from tests.helpers.agent_process import CLI, REPO
    from tests.helpers.timing import eventually

    store.close()
    config = tmp_path / "colony.yaml"
    config.write_text(f"state_dir: {tmp_path}\ncontrol_socket: {tmp_path / 'none.sock'}\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"

    def fetch(path: str) -> Any:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as response:
                body = response.read()
                return json.loads(body) if path.startswith("/api/") else body.decode()
        except (urllib.error.URLError, ConnectionError):
            return None

    process = subprocess.Popen(
        [*CLI, "ui", "--colony", str(config), "--endpoint", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    try:
        (shop,) = eventually(lambda: fetch("/api/services?window=1h"), 60, "the ui to answer")["items"]
        assert (shop["requests"], shop["instance_ids"]) == (10, ["a", "b"])
        agents = fetch("/api/agents")
        assert [(a["agent_id"], a["state"]) for a in agents["items"]] == [("a", "up"), ("b", "failing")]
        assert 'data-fleet="1"' in fetch("/") and fetch("/api/status")["summary"]["colony"]["running"] is False
    finally:
        process.terminate()
        process.wait(10)


def test_per_agent_lines_equal_each_agents_filtered_overall(store: ColonyStore) -> None:
    from coral_ebpf.query.params import RedParams
    from coral_ebpf.query.red import overall_by, red_summary

    extra = [http_row(2, [0, 1, 2, 0, 0, 0, 0, 0, 1], route="/other", status=503, agent_id="a")]
    store.store("a", "s1", {"http": extra}, {"http": 2})
    params = RedParams(since=3600, until=time.time())
    lines = overall_by(store.cursor(), "http", params, "agent_id", "agent")
    assert lines is not None and [line["agent"] for line in lines] == ["a", "b"]
    for line in lines:
        overall = red_summary(store.cursor(), "http", RedParams(since=3600, until=params.until, agent=line["agent"]))
        assert {k: v for k, v in line.items() if k != "agent"} == overall["overall"]
    assert lines[0]["requests"] == 8 and lines[0]["errors"] == 4
    grouped = red_summary(store.cursor(), "http", RedParams(since=3600, until=params.until, group="agent"))
    # group "agent": a row per service and agent, busiest first
    assert [(r["service"], r["agent"], r["requests"]) for r in grouped["rows"]] == [("shop", "a", 8), ("shop", "b", 6)]
    assert overall_by(store.cursor(), "grpc", params, "agent_id", "agent") is None
