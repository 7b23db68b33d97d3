"""The shipped systemd unit: notify type, reload, restart policy, hardening, and the capability set
derived from what the probe checks; `systemd-analyze verify` where it is installed."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from coral_ebpf.agent import sd_notify
from coral_ebpf.agent.config import DEFAULT_STATE_DIR
from coral_ebpf.agent.settings import DEFAULT_CONTROL_SOCKET
from coral_ebpf.capabilities.context import CAPABILITIES

UNIT = Path(__file__).resolve().parents[2] / "coral_ebpf" / "agent" / "coral-ebpf.service"


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_notify_reload_and_restart_policy() -> None:
    unit = directives()
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["RestartPreventExitStatus"] == ["2"]  # the CLI's exit code for a bad config
    assert unit["Restart"] == ["on-failure"]


def test_capabilities_are_exactly_what_the_probe_checks() -> None:
    unit = directives()
    assert set(unit["CapabilityBoundingSet"][0].split()) == set(CAPABILITIES)
    assert set(unit["AmbientCapabilities"][0].split()) == set(CAPABILITIES)
    text = UNIT.read_text(encoding="utf-8")
    for capability in CAPABILITIES:  # each one is justified in a comment
        assert f"#   {capability} " in text, capability


def test_hardening_leaves_only_the_state_and_runtime_dirs_writable() -> None:
    unit = directives()
    assert unit["ProtectSystem"] == ["strict"]
    writable = unit["ReadWritePaths"][0].split()
    assert str(DEFAULT_STATE_DIR) in writable and str(DEFAULT_CONTROL_SOCKET.parent) in writable
    assert unit["ProtectHome"] == ["read-only"] and unit["PrivateTmp"] == ["yes"]
    assert unit["NoNewPrivileges"] == ["yes"]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # The unit names /usr/local/bin/coral-ebpf; verify checks that the command exists, so point it at ours.
    ours = Path(sys.executable).with_name("coral-ebpf")
    unit = tmp_path / "coral-ebpf.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("/usr/local/bin/coral-ebpf", str(ours)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "coral-ebpf.service" not in result.stderr, result.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("RestartPreventExitStatus=2", "RestartPreventExitStatus=bogus"))
    result = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60, check=False)
    assert re.search(r"broken\.service:\d+: Failed to parse value, ignoring: bogus", result.stderr)  # it reads ours


def test_sd_notify_sends_datagrams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify.ready("serving")
        lines = listener.recv(4096).decode().splitlines()
        assert lines[0] == "READY=1" and "STATUS=serving" in lines
        assert sd_notify.reloading()
        assert listener.recv(4096).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert sd_notify.stopping()
        assert listener.recv(4096).decode().splitlines()[0] == "STOPPING=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not sd_notify.ready("outside systemd: nothing to tell")


def test_sd_notify_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"coral-ebpf-test-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify.stopping()
        assert listener.recv(4096).startswith(b"STOPPING=1")
