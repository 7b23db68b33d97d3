"""`coral-ebpf beyla version|config` against the stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from coral_ebpf.cli import main
from tests.beyla_standin import install_standin


@pytest.fixture
def config(tmp_path: Path) -> Path:
    binary = install_standin(tmp_path / "bin", {"version": "v3.10.0"})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "otlp": {"http_endpoint": "0.0.0.0:14318", "grpc_endpoint": "127.0.0.1:14317"},
        "beyla": {"binary": str(binary), "protocols": ["http"], "instrument": [{"open_ports": "9000-9010"}]},
    }))
    return path


def test_version(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["beyla", "version", "--config", str(config), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["version"], summary["dialect"], summary["pinned"]) == ("v3.10.0", "v3", "v3.35.0")
    assert main(["beyla", "version", "--config", str(config)]) == 0
    assert "v3.10.0" in capsys.readouterr().out


def test_config_shows_what_the_agent_would_generate(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["beyla", "config", "--config", str(config), "--json", "--port", "8080"]) == 0
    shown = json.loads(capsys.readouterr().out)
    document = shown["config"]
    assert shown["dialect"] == "v3" and "health_check" not in document
    assert document["otel_metrics_export"]["endpoint"] == "http://127.0.0.1:14318"
    assert document["otel_metrics_export"]["instrumentations"] == ["http"]
    assert document["discovery"]["instrument"] == [{"open_ports": "8080"}, {"open_ports": "9000-9010"}]
    assert {"open_ports": "14317,14318"} in document["discovery"]["exclude_instrument"]
    assert main(["beyla", "config", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# Beyla v3.10.0, dialect v3") and "otel_traces_export:" in text


def test_config_without_a_binary_uses_the_pinned_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "s"), "beyla": {"binary": "/nope/beyla"}}))
    assert main(["beyla", "config", "--config", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == "v3.35.0" and "no usable Beyla binary" in shown["notes"][0]


def test_current_config_needs_a_running_agent(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["beyla", "config", "--config", str(config), "--current"]) == 1
    assert "the agent writes it when it starts Beyla" in capsys.readouterr().err


def test_version_without_a_binary_fails_with_the_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"beyla": {"binary": "/nope/beyla"}}))
    assert main(["beyla", "version", "--config", str(path)]) == 1
    assert "coral-ebpf beyla install" in capsys.readouterr().err
