"""Probe records decoded from raw memory, and the `discover` CLI's output formats."""

from __future__ import annotations

import ctypes
import json
import socket
import time
from pathlib import Path

import pytest

from coral_ebpf.cli import main
from coral_ebpf.cli.discover import event_to_json, event_to_text
from coral_ebpf.discovery.events import decode_listen_event, decode_proc_event
from coral_ebpf.discovery.model import DiscoveryEvent
from coral_ebpf.probes.listen_events.layout import EVENT_CLOSE, EVENT_LISTEN, ListenEventRecord
from coral_ebpf.probes.proc_events.layout import EVENT_EXEC, EVENT_FORK, ProcEventRecord


def test_decode_listen_ipv6() -> None:
    record = ListenEventRecord(
        ts_ns=5, cgroup_id=9, inode=777, sock_id=0xFFFF1234, kind=EVENT_LISTEN, pid=11, tgid=10, netns=4026531833,
        port=8080, family=socket.AF_INET6, comm=b"server",
    )  # fmt: skip
    record.addr[15] = 1
    event = decode_listen_event(ctypes.addressof(record), ctypes.sizeof(record))
    assert event == DiscoveryEvent(
        event="listen", pid=11, tgid=10, comm="server", netns=4026531833, ts_ns=5, port=8080,
        family=socket.AF_INET6, cgroup_id=9, address="::1", inode=777, sock_id=0xFFFF1234,
    )  # fmt: skip


def test_decode_close_ipv4_and_reject_short_or_unknown() -> None:
    record = ListenEventRecord(kind=EVENT_CLOSE, port=22, family=socket.AF_INET, comm=b"sshd")
    record.addr[0], record.addr[3] = 127, 1
    event = decode_listen_event(ctypes.addressof(record), ctypes.sizeof(record))
    assert event is not None and (event.event, event.address) == ("close", "127.0.0.1")
    assert decode_listen_event(ctypes.addressof(record), 10) is None
    record.kind = EVENT_EXEC  # a proc_events kind, not a listen_events one
    assert decode_listen_event(ctypes.addressof(record), ctypes.sizeof(record)) is None


def test_decode_exec_and_fork() -> None:
    record = ProcEventRecord(kind=EVENT_EXEC, pid=5, tgid=5, other_pid=6, comm=b"sleep", filename=b"/bin/sleep")
    event = decode_proc_event(ctypes.addressof(record), ctypes.sizeof(record))
    assert event is not None and (event.event, event.filename, event.child_pid) == ("exec", "/bin/sleep", 0)
    record.kind, record.filename = EVENT_FORK, b""
    event = decode_proc_event(ctypes.addressof(record), ctypes.sizeof(record))
    assert event is not None and (event.event, event.child_pid) == ("fork", 6)


def test_json_line_fields() -> None:
    listen = DiscoveryEvent(
        "listen", pid=11, tgid=10, comm="srv", netns=1, ts_ns=2, port=80, family=socket.AF_INET6, address="::",
        inode=5, cgroup_id=3, service="web", rule="command_line",
    )  # fmt: skip
    line = event_to_json(listen)
    assert abs(line.pop("ts") - (time.time() - (time.monotonic_ns() - 2) / 1e9)) < 1.0
    assert line == {
        "event": "listen", "ts_monotonic_ns": 2, "pid": 10, "tid": 11, "comm": "srv", "netns": 1, "port": 80,
        "service": "web", "rule": "command_line", "family": "ipv6", "address": "::", "inode": 5, "cgroup_id": 3,
    }  # fmt: skip
    exec_line = event_to_json(DiscoveryEvent("exec", 10, 10, "sleep", 1, 3, filename="/bin/sleep"))
    assert exec_line["port"] is None and exec_line["filename"] == "/bin/sleep" and "family" not in exec_line
    json.dumps(line)
    assert "listen=[::]:80" in event_to_text(listen) and "service=web rule=command_line" in event_to_text(listen)


def test_discover_refuses_without_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setattr("coral_ebpf.agent.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.yaml")
    assert main(["discover", "--json"]) == 1
    assert "discover needs root" in capsys.readouterr().err


def test_discover_rejects_a_bad_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["discover", "--duration", "0"]) == 2
    assert "--duration" in capsys.readouterr().err
