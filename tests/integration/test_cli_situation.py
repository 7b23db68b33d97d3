"""The CLI against a real running agent: `status` at 80x24, empty results that name the engine and
its real intervals, and friendly permission errors for a user who is not root (setpriv)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coral_ebpf.agent.status import Part
from tests.helpers.agent_process import CLI, REPO, AgentProcess
from tests.helpers.beyla_otlp import (
    SECOND_NS,
    CumulativeHistogram,
    beyla_resource,
    http_server_attributes,
    metrics_request,
)
from tests.helpers.datapath import data_path

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def world_readable_dir() -> Path:
    """A directory the unprivileged user can enter (pytest's tmp dirs are root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="coral-cli-"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    root = world_readable_dir()
    running = AgentProcess(root, {"red": {"export_interval": "2s"}, "beyla": {"metrics_interval": "7s"}})
    running.config_path.chmod(0o644)
    try:
        running.start()
        yield running
        if running.exit_code is None:
            running.stop()
    finally:
        running.kill()
        shutil.rmtree(root, ignore_errors=True)


def as_nobody(*args: str, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns)} if columns else None
    return subprocess.run(
        [*NOBODY, *CLI, *args], capture_output=True, text=True, timeout=120, check=False, cwd=REPO, env=env
    )


def test_status_fits_80_by_24(agent: AgentProcess) -> None:
    result = agent.cli("status", columns=80)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines), result.stdout
    starts = [line.split()[0] for line in lines if line.split()]
    assert all(part.value in starts for part in Part), result.stdout  # one line per part
    document = agent.status()
    beyla = document["beyla"]
    why = (beyla.get("diagnosis") or {}).get("message") or beyla.get("reason") or ""
    verbose = agent.cli("status", "--verbose", columns=80)
    assert verbose.returncode == 0, verbose.stderr
    joined = " ".join(verbose.stdout.split())
    if why:
        # The long text is whole in --verbose (wrapped at spaces, never cut).
        assert " ".join(why.split()) in joined, verbose.stdout
    assert "--verbose shows every detail" in result.stdout


def test_empty_results_name_the_engine_and_its_interval(agent: AgentProcess) -> None:
    document = agent.status()
    beyla_state = document["beyla"]["state"]
    grpc = agent.cli("query", "grpc", "--service", "nothing-here", columns=80)
    assert grpc.returncode == 0, grpc.stderr
    text = " ".join(grpc.stdout.split())
    if beyla_state == "unsupported":
        assert "gRPC needs Beyla, which cannot run here:" in text, grpc.stdout
    elif beyla_state in ("running", "idle"):
        assert "exports metrics every 7s" in text, grpc.stdout
    assert "60s" not in text
    if document["red"]["state"] == "running":
        http = agent.cli("query", "http", "--service", "nothing-here", columns=80)
        assert "built-in engine" in http.stdout and "every 2s" in http.stdout, http.stdout


def test_non_root_query_and_status_get_a_friendly_error(agent: AgentProcess) -> None:
    config = str(agent.config_path)
    for args in (("query", "http"), ("query", "traces"), ("status",), ("status", "--json")):
        result = as_nobody(*args, "--config", config)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and "permission denied" in result.stderr, (args, result.stderr)
        assert "sudo" in result.stderr, result.stderr
    assert '"error"' in as_nobody("status", "--json", "--config", config).stdout
    discover = as_nobody("discover", "--duration", "1", "--config", config)
    assert discover.returncode == 1 and "Traceback" not in discover.stderr, discover.stderr
    assert "needs root" in discover.stderr and "sudo" in discover.stderr, discover.stderr


@pytest.mark.parametrize("state_mode", [0o700, 0o755])
def test_non_root_query_of_a_database_file(state_mode: int) -> None:
    """No agent: the state dir (0700) or the database itself (0600) refuses a user who is not root."""
    root = world_readable_dir()
    try:
        now = time.time_ns()
        resource = beyla_resource("shop")
        with data_path(root / "state") as (_, processor):
            histogram = CumulativeHistogram("http.server.request.duration", start_ns=now - 60 * SECOND_NS)
            histogram.record(http_server_attributes(resource, "GET", "/", 200), 0.01, 3)
            processor.consume_metrics(metrics_request(resource, [histogram.export(now)]))
        (root / "state").chmod(state_mode)
        config = root / "config.yaml"
        config.write_text(f"state_dir: {root / 'state'}\ncontrol:\n  socket: {root / 'state' / 'c.sock'}\n")
        config.chmod(0o644)
        result = as_nobody("query", "http", "--config", str(config))
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "permission denied" in result.stderr and "sudo" in result.stderr, result.stderr
        as_root = subprocess.run(
            [*CLI, "query", "http", "--json", "--config", str(config)], capture_output=True, text=True, check=False
        )
        assert as_root.returncode == 0 and '"shop"' in as_root.stdout, as_root.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)
