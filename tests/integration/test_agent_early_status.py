"""The control socket answers from the first second of `start`: while the capability probe runs
(41 s under TCG in the issue-13 run), status says `starting` and which part is at work.

The agent runs in-process with the real probe; the test only holds the probe back until it has
read the early status, so "early" does not depend on how fast this machine probes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import coral_ebpf.agent.agent as agent_module
from coral_ebpf.agent.agent import Agent
from coral_ebpf.agent.config import AgentConfig, parse_config_text
from coral_ebpf.agent.control_client import ControlClient
from coral_ebpf.errors import CoralError
from tests.helpers.timing import eventually


@pytest.fixture
def config(tmp_path: Path) -> AgentConfig:
    document = {
        "state_dir": str(tmp_path / "state"),
        "control": {"socket": str(tmp_path / "run" / "control.sock")},
        "otlp": {"grpc_endpoint": "127.0.0.1:0", "http_endpoint": "127.0.0.1:0"},
        "beyla": {"enabled": False},
        "red": {"engine": "bcc"},
        "discovery": {"enabled": False},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return parse_config_text(path.read_text(encoding="utf-8"), str(path))


@pytest.fixture
def held_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The real probe, started only once the test sets the event."""
    release = threading.Event()
    real_probe = agent_module._probe

    def probe_when_released(config: AgentConfig) -> Any:
        release.wait(60)
        return real_probe(config)

    monkeypatch.setattr(agent_module, "_probe", probe_when_released)
    yield release
    release.set()


def test_status_answers_while_the_probe_runs(config: AgentConfig, held_probe: threading.Event) -> None:
    agent = Agent(config)
    starter = threading.Thread(target=agent.start, name="agent-start")
    starter.start()
    try:
        client = ControlClient(config.control.socket, timeout=10)
        eventually(client.available, 30, "the control socket")
        early = client.status()
        assert early["agent"]["state"] == "starting"
        assert (early["probe"]["state"], early["probe"]["reason"]) == ("starting", "probing what this kernel allows")
        assert early["storage"]["state"] == "pending" and early["control"]["state"] == "running"
        shown = subprocess.run(
            [str(Path(sys.executable).with_name("coral-ebpf")), "status", "--config", str(config.source)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert shown.returncode == 0 and "(starting)" in shown.stdout, shown.stderr
        with pytest.raises(CoralError, match="the agent is still starting: its database is not open yet"):
            client.query("http", {"since": "5m"})
        held_probe.set()
        running = eventually(client.status, 120, "the agent started", until=lambda s: s["agent"]["state"] == "running")
        assert running["storage"]["state"] == "running" and running["probe"]["state"] in ("ok", "incomplete")
        assert client.query("http", {"since": "5m"})["rows"] == []
    finally:
        held_probe.set()
        starter.join(120)
        agent.stop(30)
