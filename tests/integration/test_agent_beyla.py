"""End to end through `coral-ebpf start` with Beyla (issue 5), played by the stand-in
(tests/beyla_standin: root-owned 0755, steered by its control file).

On a kernel without kprobes (the development machines) the probe says Beyla cannot run:
`beyla.force_start: true` starts it anyway, and status carries the probe's warning; on a kernel
with kprobes there is no warning (each kernel's truth is asserted). Supervision settings are
short for test speed. The stand-in's pids and process groups come from its own record of each
start (`runs()`), so "nothing left behind" is checked against what really ran.

Discovery sees the whole host, so services that other people's processes open and close in other
network namespaces also restart Beyla (after the debounce): the tests wait for states instead of
expecting them at one instant, and count planned restarts as starts, not failures.
"""

from __future__ import annotations

import http.client
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from coral_ebpf.agent.status import Part
from tests.beyla_standin import install_standin, runs
from tests.helpers.agent_process import AgentProcess, Status, call_failed, running_agent, wait_gone
from tests.helpers.kernel_truth import beyla_application_possible
from tests.helpers.red_support import ServerProcess, server
from tests.helpers.timing import eventually

FAST: dict[str, Any] = {
    "force_start": True,
    "metrics_interval": "1s",
    "traces_batch_timeout": "200ms",
    "shutdown_timeout": "5s",
    "debounce": "1s",
    "restart": {"backoff_initial": "100ms", "backoff_max": "400ms", "healthy_reset": "1h", "max_restarts": 3},
    "health": {"grace": "5s", "interval": "200ms", "timeout": "1s", "failures": 5},
}
# Where the kernel config cannot be read, assume the development machines' case (no kprobes).
BEYLA_CAN_RUN = beyla_application_possible() is True
STANDIN_ROUTES = {"/api/items", "/api/items/{id}", "/health", "/api/orders"}
CLEAN_ENVIRONMENT = {"PATH", "HOME", "LANG", "BEYLA_LOG_FORMAT", "GOMEMLIMIT"}


def settings(binary: Path, engine: str = "beyla", **beyla: Any) -> dict[str, Any]:
    return {
        "beyla": {**FAST, "binary": str(binary), **beyla},
        "red": {"engine": engine, "export_interval": "500ms"},
        "storage": {"flush_interval": "200ms"},
    }


def history(document: Status) -> list[dict[str, Any]]:
    return list(document["beyla"].get("history", []))


def states(document: Status) -> list[str]:
    return [entry["state"] for entry in history(document)]


def beyla_is(*wanted: str) -> Any:
    return lambda document: document["beyla"]["state"] in wanted


def selector_ports(config_path: Path) -> set[int]:
    document = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    return {int(port) for s in document["discovery"]["instrument"] for port in str(s["open_ports"]).split(",")}


def get(app: ServerProcess, paths: list[str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    for path in paths:
        connection.request("GET", path)
        connection.getresponse().read()
    connection.close()


@pytest.fixture(scope="module")
def shop() -> Iterator[ServerProcess]:
    """A real HTTP service, listening before any agent starts (the start-up snapshot finds it)."""
    with server("python", service_name="e2e-beyla-shop") as app:
        yield app


@pytest.fixture(scope="module")
def healthy_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("standin-healthy") / "bin"
    install_standin(directory, {"request_interval": 0.5})
    return directory


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory, healthy_bin: Path, shop: ServerProcess) -> Iterator[AgentProcess]:
    """One agent for the healthy-run tests; the last of them stops it."""
    # Inherited OTLP variables must not reach Beyla (they would rename services or redirect data).
    env = {"OTEL_SERVICE_NAME": "leaked", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    config = settings(healthy_bin / "beyla", attributes={"deployment.environment.name": "e2e"})
    agent = AgentProcess(tmp_path_factory.mktemp("agent-beyla"), config, env)
    try:
        agent.start(ready=beyla_is("running"))
        yield agent
        if agent.exit_code is None:
            agent.stop()
    finally:
        agent.kill()


@pytest.fixture
def log_on_failure(request: pytest.FixtureRequest) -> Iterator[list[AgentProcess]]:
    """Tests append the agents they start; their logs are printed when the test fails."""
    agents: list[AgentProcess] = []
    yield agents
    if call_failed(request.node):
        for agent in agents:
            print(agent.log_tail(150))


# ---------------------------------------------------------------------------- a healthy Beyla


def test_healthy_beyla_reaches_query_and_status(
    healthy: AgentProcess, healthy_bin: Path, shop: ServerProcess, log_on_failure: list[AgentProcess]
) -> None:
    log_on_failure.append(healthy)
    document = healthy.wait_for(
        lambda s: s["beyla"]["last_data_age"] is not None, timeout=60, what="Beyla's data reaching the agent"
    )
    beyla = document["beyla"]
    started = runs(healthy_bin)[-1]
    assert beyla["state"] == "running" and beyla["pid"] == started["pid"]
    assert beyla["version"] == "v3.35.0" and beyla["dialect"] == "v3.20"
    assert beyla["rss_bytes"] > 1_000_000
    if BEYLA_CAN_RUN:
        assert beyla["probe_warning"] is None
    else:
        assert "kprobes are not available" in beyla["probe_warning"] and "force_start" in beyla["probe_warning"]
    assert beyla["health"]["source"] == "healthz" and beyla["health"]["ok"] is True
    # Counted by pid: besides the shop, any other process of the shop's executable in Beyla's config
    # (discovery sees the whole host) is traced too, though Beyla logs one line per executable.
    assert shop.pid in beyla["health"]["instrumented_pids"]
    assert beyla["health"]["instrumented_processes"] == len(beyla["health"]["instrumented_pids"])
    # Discovery sees the whole host: services in other network namespaces are selected too.
    assert (beyla["restarts"], beyla["diagnosis"]) == (0, None) and beyla["services"] >= 1
    assert beyla["static_attributes"] == {"deployment.environment.name": "e2e"}
    assert beyla["binary"] == str(healthy_bin / "beyla") and beyla["binary_source"] == "config beyla.binary"
    assert "running" in states(document)
    assert document["agent"]["red_engine"] == "beyla"
    assert document["red"]["state"] == "standby"

    # Beyla runs in its own process group, with a clean environment, as root, in the test's netns.
    assert started["pgid"] == started["pid"]
    assert set(started["env"]) <= CLEAN_ENVIRONMENT, started["env"]
    assert started["netns"] == Path("/proc/self/ns/net").stat().st_ino

    # The generated config: private, and pointing at the receiver's real (port 0 → bound) address.
    config_path = Path(beyla["config_path"])
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    rendered = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    # Beyla sends to its private loopback link, not to the public OTLP listener.
    link_address = beyla["link"]["http"]["address"]
    assert link_address != document["receiver"]["http"]["address"] and link_address.startswith("127.0.0.1:")
    assert rendered["otel_metrics_export"]["endpoint"] == f"http://{link_address}"
    assert rendered["otel_traces_export"]["endpoint"] == f"http://{link_address}"
    assert shop.port in selector_ports(config_path)
    agent_ports = {int(document["receiver"][t]["address"].rpartition(":")[2]) for t in ("grpc", "http")}
    agent_ports.add(int(link_address.rpartition(":")[2]))  # Beyla's own link is the agent's too
    excluded = [s for s in rendered["discovery"]["exclude_instrument"] if "open_ports" in s]
    assert {int(p) for s in excluded for p in str(s["open_ports"]).split(",")} == agent_ports

    # Its OTLP (Beyla's names, buckets, attributes) went through the receiver into the database.
    rows: list[dict[str, Any]] = healthy.query_until(
        "http", "e2e-beyla-shop", lambda found: sum(row["requests"] for row in found) >= 10
    )
    assert {row["route"] for row in rows} <= STANDIN_ROUTES
    assert all(row["p50_ms"] is not None and row["p50_ms"] <= row["p99_ms"] for row in rows)
    now = healthy.status()
    assert now["beyla"]["link"]["http"]["signals"]["metrics"]["items_accepted"] > 0
    assert now["beyla"]["link"]["http"]["signals"]["traces"]["items_accepted"] > 0
    assert now["storage"]["rows_written"]["beyla_http_metrics"] > 0
    assert "beyla" in now["transform"]["sources"]
    assert now["discovery"]["state"] == "running" and now["discovery"]["services"] >= 1


def table_lines(agent: AgentProcess) -> dict[str, str]:
    """`coral-ebpf status` (one line per part, laid out wide enough not to be cut): part -> its line."""
    result = agent.cli("status", columns=400)
    assert result.returncode == 0, result.stderr
    parts = {part.value for part in Part}
    return {
        line.split()[0]: line for line in result.stdout.splitlines() if line.split()[:1] and line.split()[0] in parts
    }


def test_status_table_shows_beyla(healthy: AgentProcess, log_on_failure: list[AgentProcess]) -> None:
    log_on_failure.append(healthy)
    lines = eventually(  # not caught mid-restart
        lambda: table_lines(healthy),
        60,
        "Beyla running",
        until=lambda lines: lines["beyla"].split()[1] == "running",
        interval=0.5,
    )
    assert lines["beyla"].split()[1] == "running" and "pid " in lines["beyla"], lines["beyla"]
    assert "version v3.35.0" in lines["beyla"] and "rss " in lines["beyla"]
    assert ("warning: kprobes are not available" in lines["beyla"]) is not BEYLA_CAN_RUN
    assert lines["red"].split()[1] == "standby" and "engine beyla" in lines["red"]


def test_a_new_listener_restarts_beyla_with_its_port(
    healthy: AgentProcess, healthy_bin: Path, shop: ServerProcess, log_on_failure: list[AgentProcess]
) -> None:
    log_on_failure.append(healthy)
    before = healthy.status()["beyla"]
    config_path = Path(before["config_path"])
    old = runs(healthy_bin)[-1]
    with server("uvicorn", service_name="e2e-beyla-new") as new:
        document = healthy.wait_for(
            lambda s: (
                s["beyla"]["state"] == "running"
                and s["beyla"]["starts"] > before["starts"]
                and new.port in selector_ports(config_path)
            ),
            timeout=90,
            what="Beyla restarted for the new listener",
        )
        beyla = document["beyla"]
        assert selector_ports(config_path) >= {shop.port, new.port}
        assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
        assert beyla["services"] >= 2 and beyla["restarts"] == 0  # a planned restart is not a failure
        assert {shop.pid, new.pid} <= set(beyla["health"]["instrumented_pids"])
        assert beyla["last_stop"]["why"] == "services changed" and beyla["last_stop"]["sigkill"] is False
        (current,) = [run for run in runs(healthy_bin) if run["pid"] == beyla["pid"]]
        assert current["pid"] != old["pid"] and current["config"] == str(config_path)
        wait_gone([old["pgid"]], [])  # the old Beyla's whole process group is gone
        rows: list[dict[str, Any]] = healthy.query_until("http", "e2e-beyla-new", bool)
        assert {row["route"] for row in rows} <= STANDIN_ROUTES


def test_sigterm_stops_beyla_and_every_request_is_stored_once(
    healthy: AgentProcess, healthy_bin: Path, log_on_failure: list[AgentProcess]
) -> None:
    """Stopping flushes Beyla first: its final metrics and spans reach the database before it closes,
    so per service the requests counted from metrics equal the server spans stored."""
    log_on_failure.append(healthy)
    healthy.stop(extra_pgids=[run["pgid"] for run in runs(healthy_bin)])
    assert "Beyla stopped" in healthy.log_text()
    for service in ("e2e-beyla-shop", "e2e-beyla-new"):
        rows = healthy.cli_json("query", "http", "--service", service, "--since", "1h")
        traces = healthy.cli_json("query", "traces", "--service", service, "--since", "1h", "--limit", "10000")
        assert len(traces) < 10000
        assert sum(row["requests"] for row in rows) == sum(trace["span_count"] for trace in traces) > 0, service
        errors = sum(1 for trace in traces if trace["status"] == "ERROR")
        assert sum(row["errors"] for row in rows) == errors, service
    # beyla.attributes: the agent tagged every Beyla resource on receipt.
    connection = duckdb.connect(str(healthy.state_dir / "coral-ebpf.duckdb"), read_only=True)
    try:
        resources = connection.execute(
            "SELECT service_name, attributes FROM otel_resources WHERE telemetry_sdk_name = 'beyla'"
        ).fetchall()
    finally:
        connection.close()
    assert {name for name, _ in resources} >= {"e2e-beyla-shop", "e2e-beyla-new"}
    assert all(json.loads(attributes)["deployment.environment.name"] == "e2e" for _, attributes in resources)


# ---------------------------------------------------------------------------- failures


def test_crash_loop_backs_off_then_fails_and_auto_falls_back_to_bcc(
    tmp_path: Path, shop: ServerProcess, log_on_failure: list[AgentProcess]
) -> None:
    binary = install_standin(tmp_path / "bin", {"crash": {"times": 1000, "after": 0.3}})
    with running_agent(tmp_path / "agent", settings(binary, engine="auto"), ready=beyla_is("failed")) as agent:
        log_on_failure.append(agent)
        document = agent.wait_for(
            lambda s: s["red"]["state"] == "running", timeout=120, what="the fallback to the BCC engine"
        )
        beyla = document["beyla"]
        assert beyla["state"] == "failed" and beyla["pid"] is None
        # Restarts count failures; other services appearing on the host may add planned starts.
        assert (beyla["restarts"], beyla["last_exit_code"]) == (3, 2) and beyla["starts"] >= 4
        assert beyla["diagnosis"]["kind"] == "crash" and "gave up after 3 restarts" in beyla["diagnosis"]["message"]
        backoffs = [entry for entry in history(document) if entry["state"] == "backoff"]
        assert [entry["delay"] for entry in backoffs] == pytest.approx([0.1, 0.2, 0.4])
        assert [entry["attempt"] for entry in backoffs] == [1, 2, 3]
        assert all(entry["kind"] == "crash" for entry in backoffs)
        transitions = [state for state in states(document) if state != "running"]
        assert transitions[-1] == "failed" and transitions.count("backoff") == 3
        assert transitions.index("backoff") > transitions.index("starting")
        assert len(runs(binary.parent)) == 1 + beyla["starts"]  # the version probe, then each start
        wait_gone([run["pgid"] for run in runs(binary.parent)], [])

        red = document["red"]
        assert red["engine"] == "bcc" and document["agent"]["red_engine"] == "bcc"
        assert "Beyla is failed" in red["reason"] and "built-in BCC probe" in red["reason"]
        # The fallback engine really serves: it traces the service discovery found.
        agent.wait_for(
            lambda s: any(x["pid"] == shop.pid for x in s["red"].get("services", [])), timeout=60, what="shop traced"
        )
        get(shop, ["/a/1", "/a/2", "/fail", "/b"])
        rows: list[dict[str, Any]] = agent.query_until(
            "http", "e2e-beyla-shop", lambda found: sum(row["requests"] for row in found) >= 4
        )
        assert (sum(row["requests"] for row in rows), sum(row["errors"] for row in rows)) == (4, 1)
        lines = table_lines(agent)
        assert lines["beyla"].split()[1] == "failed" and "diagnosis: gave up after 3 restarts" in lines["beyla"]


FAILURES = {
    # stand-in `fail` value: (diagnosis kind, retried)
    "kernel_too_old": ("kernel_too_old", False),
    "no_btf": ("no_btf", False),
    "capabilities": ("capabilities", False),
    "wrong_configuration": ("wrong_configuration", False),
    "memlock": ("memlock", False),
    "runtime": ("runtime_error", True),
    "port_in_use": ("port_in_use", True),
}


@pytest.mark.parametrize("fail", list(FAILURES))
def test_each_beyla_error_is_diagnosed_in_status(
    fail: str, tmp_path: Path, shop: ServerProcess, log_on_failure: list[AgentProcess]
) -> None:
    kind, retried = FAILURES[fail]
    binary = install_standin(tmp_path / "bin", {"fail": fail})
    # No discovery here (faster): Beyla instruments a static selector.
    config = settings(binary, instrument=[{"open_ports": shop.port}], restart={"max_restarts": 1})
    config["discovery"] = {"enabled": False}
    with running_agent(tmp_path / "agent", config, ready=beyla_is("failed")) as agent:
        log_on_failure.append(agent)
        document = agent.cli_json("status")
        beyla = document["beyla"]
        diagnosis = beyla["diagnosis"]
        assert diagnosis["kind"] == kind, diagnosis
        assert diagnosis["message"] and diagnosis["fix"] and diagnosis["line"], diagnosis
        backoffs = [entry for entry in history(document) if entry["state"] == "backoff"]
        if retried:
            assert [entry["kind"] for entry in backoffs] == [kind]
            assert "gave up after 1 restarts" in diagnosis["message"]
            assert (beyla["restarts"], beyla["last_exit_code"]) == (1, 255)
        else:
            assert backoffs == [] and beyla["restarts"] == 0
        assert beyla["pid"] is None and document["discovery"]["state"] == "disabled"
        # red.engine beyla: nothing falls back, and status says why.
        assert document["red"]["state"] == "standby" and document["agent"]["red_engine"] == "beyla"
        assert "the built-in probe stays off" in document["red"]["reason"]
        wait_gone([run["pgid"] for run in runs(binary.parent)], [])


def test_degraded_discovery_and_a_beyla_that_ignores_sigterm(
    tmp_path: Path, shop: ServerProcess, log_on_failure: list[AgentProcess]
) -> None:
    binary = install_standin(tmp_path / "bin", {"watcher_failure": True, "hang_on_sigterm": True})
    config = settings(binary, shutdown_timeout="1s")
    agent = AgentProcess(tmp_path / "agent", config)
    log_on_failure.append(agent)
    try:
        # Degraded from the log line alone: /healthz answers (once its first check has run).
        document = agent.start(ready=lambda s: beyla_is("degraded")(s) and s["beyla"]["health"]["ok"] is True)
        beyla = document["beyla"]
        assert beyla["diagnosis"]["kind"] == "discovery_dead"
        assert "Unable to load eBPF watcher for process events" in beyla["diagnosis"]["message"]
        assert "kprobe" in beyla["diagnosis"]["fix"]
        assert beyla["pid"] in [run["pid"] for run in runs(binary.parent)] and beyla["restarts"] == 0
        pgids = [run["pgid"] for run in runs(binary.parent)]
        agent.stop(extra_pgids=pgids)  # SIGTERM is ignored: SIGKILL 1s + 5s later, then the agent exits 0
        assert "sigkill=True" in agent.log_text()
    finally:
        agent.kill()
