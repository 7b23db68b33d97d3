"""`coral-ebpf config show` prints a file `config check` accepts, in the user's units (the real CLI)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from coral_ebpf.agent.config import parse_config_text
from tests.helpers.agent_process import CLI, REPO

CUSTOMISED = """\
state_dir: {state}
agent_id: web-1
otlp:
  grpc_endpoint: 127.0.0.1:14317
  http_endpoint: null
  max_body_bytes: 8MiB
  idle_timeout: 90s
storage:
  retention: 2h
  memory_limit: 200MiB
discovery:
  exclude: ["*sshd*", "cron"]
beyla:
  otlp_protocol: grpc
  metrics_interval: 15s
  instrument:
    - open_ports: 8080
      exe_path: "*shop*"
  restart:
    backoff_max: 2m
red:
  export_interval: 500ms
limits:
  memory: 1GiB
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, check=False, cwd=REPO)


def round_trip(tmp_path: Path, text: str) -> tuple[dict[str, Any], Path]:
    given = tmp_path / "given.yaml"
    given.write_text(text, encoding="utf-8")
    shown = cli("config", "show", "--config", str(given))
    assert shown.returncode == 0, shown.stderr
    again = tmp_path / "shown.yaml"
    again.write_text(shown.stdout, encoding="utf-8")
    checked = cli("config", "check", "--config", str(again))
    assert checked.returncode == 0, f"{checked.stderr}\n--- shown:\n{shown.stdout}"
    return yaml.safe_load(shown.stdout), given


def test_defaults_round_trip(tmp_path: Path) -> None:
    document, given = round_trip(tmp_path, f"state_dir: {tmp_path / 'state'}\n")
    # Durations and sizes in units, every section there.
    assert document["storage"]["retention"] == "1h" and document["storage"]["spool_max_bytes"] == "256MiB"
    assert document["otlp"]["max_connections"] == 256 and document["beyla"]["metrics_interval"] == "5s"
    assert parse_config_text(given.read_text()) == parse_config_text(yaml.safe_dump(document))


def test_customised_round_trip_keeps_the_users_units(tmp_path: Path) -> None:
    document, given = round_trip(tmp_path, CUSTOMISED.format(state=tmp_path / "state"))
    assert document["storage"]["retention"] == "2h" and document["red"]["export_interval"] == "500ms"
    assert document["limits"]["memory"] == "1GiB" and document["otlp"]["idle_timeout"] == "90s"
    assert document["otlp"]["http_endpoint"] is None  # turned off stays off
    assert document["beyla"]["instrument"] == [{"open_ports": 8080, "exe_path": "*shop*"}]
    assert document["discovery"]["exclude"] == ["*sshd*", "cron"]
    original = parse_config_text(given.read_text(), source="x")
    shown = parse_config_text(yaml.safe_dump(document), source="x")
    assert shown == original


@pytest.mark.parametrize("flag", ["--json"])
def test_json_is_the_same_document(tmp_path: Path, flag: str) -> None:
    given = tmp_path / "given.yaml"
    given.write_text(CUSTOMISED.format(state=tmp_path / "state"), encoding="utf-8")
    as_yaml = yaml.safe_load(cli("config", "show", "--config", str(given)).stdout)
    as_json = yaml.safe_load(cli("config", "show", flag, "--config", str(given)).stdout)
    assert as_json == as_yaml
