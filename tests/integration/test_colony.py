"""The colony end to end (issue 16): three real agents fed by OTLP senders, one colony, all on
loopback in the tests' network namespace. Fleet counts equal what was sent, through an agent
restarted with a fresh database, an agent down for several polls, and a colony SIGKILLed
mid-poll; histograms merge exactly across agents.

The tests share the agents and the colony and run in order; each adds data and checks totals.
"""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_text

from coral_ebpf.query.quantile import histogram_quantile
from tests.helpers.agent_process import AgentProcess, call_failed
from tests.helpers.fleet import BOUNDS, ColonyProcess, pull_agent, send_http, send_spans
from tests.helpers.processes import free_port

AGENTS = ("alpha", "beta", "gamma")
Mix = dict[tuple[str, str, int], tuple[int, float]]


class Fleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = {name: free_port() for name in AGENTS}
        self.agents = {name: self._agent(name) for name in AGENTS}
        self.sent: dict[str, list[Mix]] = {name: [] for name in AGENTS}
        self.spans = dict.fromkeys(AGENTS, 0)
        self.colony = ColonyProcess(
            root / "colony",
            {
                "agents": [{"id": n, "address": f"127.0.0.1:{self.ports[n]}"} for n in AGENTS],
                "poll": {"max_records": 40},
            },
        )

    def _agent(self, name: str) -> AgentProcess:
        return pull_agent(self.root / name, name, {"colony_api": {"endpoint": f"127.0.0.1:{self.ports[name]}"}})

    def send(self, name: str, mix: Mix, spans: int = 0) -> None:
        send_http(self.agents[name], "shop", mix)
        self.sent[name].append(mix)
        if spans:
            send_spans(self.agents[name], "shop", spans)
            self.spans[name] += spans

    def requests(self, name: str | None = None) -> int:
        names = [name] if name else list(AGENTS)
        return sum(count for n in names for mix in self.sent[n] for count, _ in mix.values())

    def counts(self) -> list[int]:
        counts = [0] * (len(BOUNDS) + 1)
        for mixes in self.sent.values():
            for mix in mixes:
                for count, seconds in mix.values():
                    counts[next((i for i, b in enumerate(BOUNDS) if seconds <= b), len(BOUNDS))] += count
        return counts

    def wait_agent_rows(self, name: str) -> None:
        """Until the agent stored everything sent to it (the writer flushes every 100 ms)."""
        agent = self.agents[name]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = agent.cli_json("query", "http", "--since", "1h")
            if sum(r["requests"] for r in rows) >= self.requests(name) - self.lost.get(name, 0):
                return
            time.sleep(0.2)
        raise AssertionError(f"agent {name} did not store what was sent")

    lost: dict[str, int] = {}  # requests on an agent database thrown away (they stay in the colony)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path_factory.mktemp("colony"))
    try:
        for agent in fleet.agents.values():
            agent.start(timeout=120)
        fleet.colony.start()
        yield fleet
        fleet.colony.stop()
        for agent in fleet.agents.values():
            if agent.exit_code is None and agent.process is not None and agent.process.poll() is None:
                agent.stop()
    finally:
        fleet.colony.kill()
        for agent in fleet.agents.values():
            agent.kill()


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest, fleet: Fleet) -> Iterator[None]:
    yield
    if call_failed(request.node):
        print(fleet.colony.log_tail(120))
        for agent in fleet.agents.values():
            print(agent.log_tail(40))


def _overall(fleet: Fleet, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = fleet.colony.query("http", *args)
    return result


def _expected_ms(counts: list[int], q: float) -> float:
    value = histogram_quantile(q, BOUNDS, counts)
    assert value is not None
    return value * 1000


def test_fleet_counts_equal_the_sum_sent(fleet: Fleet) -> None:
    fleet.send("alpha", {("GET", "/a", 200): (50, 0.02), ("GET", "/a", 500): (5, 0.3)}, spans=4)
    fleet.send("beta", {("GET", "/a", 200): (20, 0.2), ("POST", "/b", 201): (7, 3.0)}, spans=2)
    fleet.send("gamma", {("GET", "/a", 200): (9, 0.004)}, spans=3)
    for name in AGENTS:
        fleet.wait_agent_rows(name)
    fleet.colony.caught_up()
    result = _overall(fleet)
    assert result["overall"]["requests"] == fleet.requests() == 91
    assert result["overall"]["errors"] == 5
    # Exact merging: the fleet percentiles are those of the summed histogram.
    counts = fleet.counts()
    for key, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        assert result["overall"][key] == pytest.approx(_expected_ms(counts, q), rel=1e-6)
    by_agent = {entry["agent"]: entry for entry in result["by_agent"]}
    assert {name: by_agent[name]["requests"] for name in AGENTS} == {n: fleet.requests(n) for n in AGENTS}
    only_beta = _overall(fleet, "--agent", "beta")
    assert only_beta["overall"]["requests"] == 27 and [e["agent"] for e in only_beta["by_agent"]] == ["beta"]
    traces = fleet.colony.query("traces", "--limit", "100")
    assert len(traces) == sum(fleet.spans.values())
    assert {agent for trace in traces for agent in trace["agents"]} == set(AGENTS)
    # A second look changes nothing: re-polls never double count.
    time.sleep(1.5)
    assert _overall(fleet)["overall"]["requests"] == 91
    status = fleet.colony.status()
    for agent in status["agents"]:
        assert agent["session_id"] and agent["checkpoints"]["http"]["last_seq_id"] >= 1
        assert agent["gaps"]["open"] == 0 and agent["consecutive_failures"] == 0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_colony_serves_metrics_and_health_like_the_agent(fleet: Fleet) -> None:
    fleet.colony.caught_up()
    status = fleet.colony.status()
    assert status["telemetry"]["state"] == "running", status["telemetry"]
    base = f"http://{status['telemetry']['address']}"
    assert _get(base + "/-/healthy")[0] == 200
    code, reason = _get(base + "/-/ready")
    assert code == 200 and reason.startswith("ready: 3 agents polled"), reason
    code, text = _get(base + "/metrics")
    assert code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parse_text(text)
        for sample in family.samples
    }
    after = fleet.colony.status()
    for name in AGENTS:
        assert samples[("coral_ebpf_colony_agent_up", (("agent_id", name),))] == 1
    # The counters are the ones `colony status --json` shows, and every row received was stored.
    assert samples[("coral_ebpf_colony_rows_stored_total", ())] == after["metrics"]["rows_stored_total"] > 0
    received = after["metrics"]["rows_received_total"]
    assert sum(received.values()) >= after["metrics"]["rows_stored_total"]  # a re-polled row is received twice
    for kind, count in received.items():
        assert samples[("coral_ebpf_colony_rows_received_total", (("type", kind),))] == count
    for kind, count in after["database"]["rows"].items():
        assert samples[("coral_ebpf_colony_database_rows", (("type", kind),))] == count
    assert samples[("coral_ebpf_colony_poll_cycles_total", ())] >= 1
    assert after["telemetry"]["scrapes"] >= 1


def test_agent_restarted_with_a_fresh_database(fleet: Fleet) -> None:
    gamma = fleet.agents["gamma"]
    old_session = fleet.colony.agent("gamma")["session_id"]
    gamma.stop()
    fleet.lost["gamma"] = fleet.requests("gamma")
    shutil.rmtree(gamma.state_dir)
    fleet.agents["gamma"] = gamma = fleet._agent("gamma")
    gamma.start(timeout=120)
    fleet.send("gamma", {("GET", "/g", 200): (11, 0.05)})
    fleet.wait_agent_rows("gamma")
    fleet.colony.wait_for(
        lambda s: any(a["agent_id"] == "gamma" and a["session_id"] != old_session for a in s["agents"]),
        what="gamma's new session",
    )
    fleet.colony.caught_up()
    assert fleet.colony.agent("gamma")["checkpoints"]["http"]["session_id"] != old_session
    # Rows of the old database stay in the colony; the new ones add up, nothing twice.
    result = _overall(fleet)
    assert result["overall"]["requests"] == fleet.requests() == 102
    assert {e["agent"]: e["requests"] for e in result["by_agent"]}["gamma"] == 20


def test_agent_down_for_several_polls(fleet: Fleet) -> None:
    beta = fleet.agents["beta"]
    beta.stop()
    fleet.colony.wait_for(
        lambda s: next(a for a in s["agents"] if a["agent_id"] == "beta")["consecutive_failures"] >= 3,
        what="three failed polls of beta",
    )
    down = fleet.colony.agent("beta")
    assert "UNAVAILABLE" in down["last_error"]
    # The others are still polled meanwhile.
    fleet.send("alpha", {("GET", "/a", 200): (6, 0.02)})
    fleet.wait_agent_rows("alpha")
    fleet.colony.wait_for(lambda s: _overall(fleet)["overall"]["requests"] == fleet.requests(), what="alpha's new rows")
    # Back with the same database: the colony resumes from its checkpoint.
    fleet.agents["beta"] = beta = fleet._agent("beta")
    beta.start(timeout=120)
    fleet.send("beta", {("GET", "/a", 200): (13, 0.2)})
    fleet.wait_agent_rows("beta")
    fleet.colony.caught_up()
    assert fleet.colony.agent("beta")["consecutive_failures"] == 0
    result = _overall(fleet)
    assert result["overall"]["requests"] == fleet.requests() == 121
    assert {e["agent"]: e["requests"] for e in result["by_agent"]}["beta"] == 40


def test_colony_killed_mid_poll_and_restarted(fleet: Fleet) -> None:
    # 400 rows (one per route) on alpha, read 40 per call: the colony needs ten transactions.
    fleet.colony.stop()
    fleet.send("alpha", {("GET", f"/many/{i}", 200): (1, 0.01) for i in range(400)})
    fleet.wait_agent_rows("alpha")
    before = fleet.colony.query("http")["overall"]["requests"]  # offline: read-only on the file
    assert before == fleet.requests() - 400
    rows_before = fleet.colony.query("http")["overall"]["requests"] and _stored_rows(fleet)
    fleet.colony.start()
    # Kill it while alpha's backlog is being copied: some pages stored, not all.
    deadline = time.monotonic() + 30
    stored = rows_before
    while time.monotonic() < deadline:
        stored = fleet.colony.status()["database"]["rows"]["http"]
        if stored > rows_before:
            break
        time.sleep(0.005)
    fleet.colony.kill()
    assert rows_before < stored < rows_before + 400, (rows_before, stored)
    fleet.colony.start()
    fleet.colony.caught_up()
    result = _overall(fleet)
    assert result["overall"]["requests"] == fleet.requests() == 521
    assert {e["agent"]: e["requests"] for e in result["by_agent"]} == {"alpha": 461, "beta": 40, "gamma": 20}
    # Every row of alpha's backlog is there once (the primary key would refuse a second copy).
    assert fleet.colony.status()["database"]["rows"]["http"] == rows_before + 400


def _stored_rows(fleet: Fleet) -> int:
    """The colony's HTTP rows, read from its database file while it is stopped."""
    from coral_ebpf.storage.database import open_read_only

    connection = open_read_only(Path(fleet.colony.document["state_dir"]) / "colony.duckdb")
    try:
        row = connection.execute("SELECT count(*) FROM beyla_http_metrics").fetchone()
        return int(row[0]) if row else 0
    finally:
        connection.close()


def test_colony_status_cli(fleet: Fleet) -> None:
    from tests.helpers.agent_process import run_cli

    result = run_cli("colony", "status", "--config", str(fleet.colony.config_path), "--json")
    assert result.returncode == 0, result.stderr
    import json

    document = json.loads(result.stdout)
    assert document["running"] is True
    assert {a["agent_id"] for a in document["agents"]} == set(AGENTS)
    assert document["database"]["size_bytes"] > 0
    table = run_cli("colony", "status", "--config", str(fleet.colony.config_path), columns=200)
    assert table.returncode == 0 and "alpha" in table.stdout and "Lag" in table.stdout
