"""Every rule across keys holds the same for `config check`, for `start`, and for a config built in code."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from coral_ebpf.agent.agent import Agent
from coral_ebpf.agent.config import parse_config_text, validate
from coral_ebpf.errors import ConfigError

CLI = str(Path(sys.executable).with_name("coral-ebpf"))

# (name, YAML breaking one rule, the line the error names, words the error must contain)
RULES = [
    ("beyla engine without beyla", "red:\n  engine: beyla\nbeyla:\n  enabled: false\n", 2, "beyla.enabled is false"),
    ("empty request bodies", "otlp:\n  max_body_bytes: 0\n", 2, "otlp.max_body_bytes must be more than 0"),
    (
        "beyla sends to a disabled listener",
        "otlp:\n  http_endpoint: ''\n",
        None,
        "otlp.http_endpoint is disabled",
    ),
    (
        "two listeners on one address",
        "otlp:\n  grpc_endpoint: 127.0.0.1:9999\n  http_endpoint: 127.0.0.1:9999\n",
        3,
        "cannot share one address",
    ),
]
IDS = [rule[0] for rule in RULES]


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.yaml"
    socket = tmp_path / "control.sock"
    path.write_text(f"state_dir: {tmp_path / 'state'}\ncontrol:\n  socket: {socket}\n{body}", encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "body", "line", "words"), RULES, ids=IDS)
def test_parse_rejects(name: str, body: str, line: int | None, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text(body, source="c.yaml")
    message = str(info.value)
    assert words in message
    if line is not None:
        assert f"c.yaml:{line}: " in message


@pytest.mark.parametrize("command", ["check", "start"])
@pytest.mark.parametrize(("body", "words"), [(rule[1], rule[3]) for rule in RULES], ids=IDS)
def test_config_check_and_start_agree(tmp_path: Path, command: str, body: str, words: str) -> None:
    path = _write(tmp_path, body)
    argv = (
        [CLI, "config", "check", "--config", str(path)] if command == "check" else [CLI, "start", "--config", str(path)]
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr
    assert not (tmp_path / "state").exists(), "start must refuse before touching the state dir"


@pytest.mark.parametrize(("name", "body", "line", "words"), RULES, ids=IDS)
def test_agent_refuses_a_config_built_in_code(name: str, body: str, line: int | None, words: str) -> None:
    good = parse_config_text("")
    broken = {
        "beyla engine without beyla": dataclasses.replace(
            good,
            red=dataclasses.replace(good.red, engine="beyla"),
            beyla=dataclasses.replace(good.beyla, enabled=False),
        ),
        "empty request bodies": dataclasses.replace(good, otlp=dataclasses.replace(good.otlp, max_body_bytes=0)),
        "beyla sends to a disabled listener": dataclasses.replace(
            good, otlp=dataclasses.replace(good.otlp, http_endpoint=None)
        ),
        "two listeners on one address": dataclasses.replace(
            good, otlp=dataclasses.replace(good.otlp, grpc_endpoint="127.0.0.1:9", http_endpoint="127.0.0.1:9")
        ),
    }[name]
    assert [p.message for p in validate(broken) if words in p.message]
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        Agent(broken)


def test_rules_that_allow() -> None:
    # The built-in engine needs no Beyla listener; port 0 on both listeners picks two free ports.
    assert not validate(parse_config_text("red:\n  engine: bcc\notlp:\n  http_endpoint: ''\n"))
    assert not validate(parse_config_text("beyla:\n  enabled: false\notlp:\n  http_endpoint: ''\n"))
    assert not validate(parse_config_text("otlp:\n  grpc_endpoint: 127.0.0.1:0\n  http_endpoint: 127.0.0.1:0\n"))
    assert not validate(parse_config_text(""))


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text("red:\n  engine: beyla\nbeyla:\n  enabled: false\notlp:\n  max_body_bytes: 0\n", "c.yaml")
    assert "c.yaml:2: red.engine is beyla" in str(info.value)
    assert "c.yaml:6: otlp.max_body_bytes" in str(info.value)
