from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from coral_ebpf.agent.control import ControlServer, ControlSocketInUseError
from coral_ebpf.agent.control_client import ControlClient
from coral_ebpf.agent.status import AgentInfo, Part, PartStatus, StatusDocument
from coral_ebpf.errors import AgentNotRunningError, CoralError
from coral_ebpf.state import PartState


def _status() -> StatusDocument:
    agent = AgentInfo(
        "0", os.getpid(), PartState.RUNNING, "host", time.time(), "(defaults)", "/tmp/state", "bcc", "red.engine is bcc"
    )
    return StatusDocument(agent, {Part.BEYLA: PartStatus(PartState.DISABLED, time.time(), "beyla.enabled is false")})


def _query(kind: str, params: dict[str, Any]) -> Any:
    if kind == "boom":
        raise CoralError("no such query kind 'boom'", "use http, grpc, sql or traces")
    return [{"kind": kind, **params}]


@pytest.fixture
def server(tmp_path: Path) -> Any:
    srv = ControlServer(tmp_path / "run" / "control.sock", _status, _query)
    srv.start()
    yield srv
    srv.stop(5)


def test_status_and_query_round_trip(server: ControlServer) -> None:
    client = ControlClient(server.path)
    assert client.available()
    document = client.status()
    assert document["beyla"] == {
        "state": "disabled",
        "since": document["beyla"]["since"],
        "reason": "beyla.enabled is false",
    }
    assert document["agent"]["pid"] == os.getpid() and document["agent"]["red_engine"] == "bcc"
    assert list(document) == ["agent", "beyla"]
    assert client.query("http", {"service": "api"}) == [{"kind": "http", "service": "api"}]


def test_socket_is_owner_only(server: ControlServer) -> None:
    mode = server.path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(server.path.parent.stat().st_mode) == 0o700


def test_errors_carry_message_and_hint(server: ControlServer) -> None:
    with pytest.raises(CoralError) as info:
        ControlClient(server.path).query("boom", {})
    assert "no such query kind" in info.value.message
    assert "use http" in info.value.hint


def test_second_server_refused_while_first_lives(server: ControlServer) -> None:
    with pytest.raises(ControlSocketInUseError, match="already running"):
        ControlServer(server.path, _status, _query).start()


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # file remains, nobody listens
    srv = ControlServer(path, _status, _query)
    srv.start()
    try:
        assert ControlClient(path).status()["agent"]["pid"] == os.getpid()
    finally:
        srv.stop(5)
    assert not path.exists()


def test_client_without_agent(tmp_path: Path) -> None:
    client = ControlClient(tmp_path / "none.sock")
    assert not client.available()
    with pytest.raises(AgentNotRunningError, match="no coral-ebpf agent answers"):
        client.status()
