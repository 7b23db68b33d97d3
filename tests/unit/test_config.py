from __future__ import annotations

from pathlib import Path

import pytest

from coral_ebpf.agent.config import load_config, parse_config_text
from coral_ebpf.errors import ConfigError


def test_defaults_when_default_file_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("coral_ebpf.agent.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.yaml")
    config = load_config(None)
    assert config.source == "(defaults)"
    assert config.otlp.grpc_endpoint == "127.0.0.1:4317"
    assert config.otlp.http_endpoint == "127.0.0.1:4318"
    assert config.storage.retention == 3600.0
    assert config.storage.path == Path("/var/lib/coral-ebpf/coral-ebpf.duckdb")
    assert config.control.socket == Path("/run/coral-ebpf/control.sock")
    assert config.beyla.enabled is True


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_values_are_converted() -> None:
    config = parse_config_text(
        "state_dir: /tmp/x\notlp:\n  max_body_bytes: 4MiB\n  grpc_endpoint: ''\nstorage:\n  retention: 90m\n"
    )
    assert config.otlp.max_body_bytes == 4 * 1024 * 1024
    assert config.otlp.grpc_endpoint is None
    assert config.storage.retention == 5400.0
    assert config.storage.path == Path("/tmp/x/coral-ebpf.duckdb")


def test_unknown_key_names_key_and_line() -> None:
    text = "log_level: info\notlp:\n  http_endpoint: 127.0.0.1:4318\n  grpc_endpiont: 127.0.0.1:4317\n"
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, source="c.yaml")
    message = str(info.value)
    assert "c.yaml:4: unknown key 'otlp.grpc_endpiont'" in message
    assert "did you mean 'grpc_endpoint'" in message


def test_mistyped_value_names_key_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text("storage:\n  retention: one hour\n", source="c.yaml")
    assert "c.yaml:2: storage.retention:" in str(info.value)
    assert "not a duration" in str(info.value)


def test_wrong_type_and_enum() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text("beyla:\n  enabled: 'yes please'\nlog_level: loud\n", source="c.yaml")
    message = str(info.value)
    assert "c.yaml:2: beyla.enabled: expected boolean" in message
    assert "c.yaml:3: log_level:" in message


def test_bad_endpoint() -> None:
    with pytest.raises(ConfigError, match=r"c.yaml:2: otlp.http_endpoint: .*port"):
        parse_config_text("otlp:\n  http_endpoint: localhost:99999\n", source="c.yaml")


def test_bad_yaml_names_line() -> None:
    with pytest.raises(ConfigError, match=r"c.yaml:3: not valid YAML"):
        parse_config_text("otlp:\n  a: 1\n b: [\n", source="c.yaml")


def test_duplicate_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"c.yaml:3: duplicate key 'log_level' \(first written on line 1\)"):
        parse_config_text("log_level: info\nstate_dir: /x\nlog_level: debug\n", source="c.yaml")


def test_top_level_must_be_mapping() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config_text("- a\n- b\n", source="c.yaml")
