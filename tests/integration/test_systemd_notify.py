"""A real `coral-ebpf start` under a listening NOTIFY_SOCKET, as systemd runs it (`Type=notify`):
READY=1 once the parts are up, RELOADING=1/READY=1 around a SIGHUP reload that applies what it
can and names what needs a restart, STOPPING=1 at SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers.agent_process import AgentProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(240)
        yield sock, path


def receive(sock: socket.socket) -> dict[str, str]:
    lines = sock.recv(4096).decode().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_ready_reload_and_stopping_notifications(listener: tuple[socket.socket, Path], tmp_path: Path) -> None:
    sock, path = listener
    agent = AgentProcess(tmp_path / "agent", {"red": {"export_interval": "1s"}}, env={"NOTIFY_SOCKET": str(path)})
    try:
        agent.launch()
        ready = receive(sock)
        assert ready["READY"] == "1" and ready["MAINPID"] == str(agent.pid), ready
        document = agent.status()  # READY=1 came after every part started: status answers at once
        assert document["storage"]["state"] == "running" and document["receiver"]["state"] == "running"

        changed = dict(agent.document)
        changed["log_level"] = "debug"
        changed["discovery"] = {"exclude": ["*/not-a-service"]}
        changed["red"] = {"export_interval": "1s", "routes": ["/users/{id}"]}
        changed["storage"] = {"retention": "2h"}
        agent.config_path.write_text(yaml.safe_dump(changed), encoding="utf-8")
        os.kill(agent.pid, signal.SIGHUP)
        assert "RELOADING" in receive(sock)
        after = receive(sock)
        assert after["READY"] == "1" and "storage.retention" in after["STATUS"], after
        reload = agent.status()["agent"]["last_reload"]
        assert reload["error"] is None
        assert set(reload["applied"]) == {"log_level", "discovery.exclude", "red.routes"}, reload
        assert reload["needs_restart"] == ["storage.retention"]
        assert agent.status()["storage"]["retention_seconds"] == 3600  # kept until a restart
        assert "config reloaded" in agent.log_text()
        assert 'level=debug logger=coral_ebpf.agent.agent msg="live settings after reload"' in agent.log_text()

        agent.config_path.write_text("storage: {retention: forever}\n", encoding="utf-8")
        os.kill(agent.pid, signal.SIGHUP)
        assert "RELOADING" in receive(sock)
        assert "the last reload failed" in receive(sock)["STATUS"]
        failed = agent.status()["agent"]["last_reload"]
        assert "storage.retention" in failed["error"] and failed["applied"] == []

        agent.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert receive(sock)["STOPPING"] == "1"
        assert agent.process.wait(60) == 0  # type: ignore[union-attr]
        agent.exit_code = 0
    finally:
        agent.kill()


def test_no_notify_socket_no_notification(tmp_path: Path) -> None:
    """Outside systemd nothing is sent and nothing fails (the variable is unset)."""
    env = {key: value for key, value in os.environ.items() if key != "NOTIFY_SOCKET"}
    agent = AgentProcess(tmp_path, {"red": {"export_interval": "1s"}}, env=env)
    try:
        agent.start()
        assert "could not notify systemd" not in agent.log_text()
        started = time.monotonic()
        agent.stop()
        assert time.monotonic() - started < 60
    finally:
        agent.kill()
