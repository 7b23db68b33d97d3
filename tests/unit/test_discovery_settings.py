"""The `discovery:` config section: every key honoured or rejected with its line."""

from __future__ import annotations

import pytest

from coral_ebpf.agent.config import parse_config_text
from coral_ebpf.capabilities.report import Feature, ProbeReport
from coral_ebpf.discovery.component import buffer_candidates
from coral_ebpf.discovery.settings import DiscoverySettings
from coral_ebpf.errors import ConfigError


def test_defaults() -> None:
    assert parse_config_text("log_level: info\n").discovery == DiscoverySettings(
        enabled=True, exclude=(), buffer="auto", buffer_pages=64
    )


def test_every_key() -> None:
    config = parse_config_text(
        "discovery:\n  enabled: false\n  exclude: ['*-sidecar', /opt/tools/*]\n"
        "  buffer: perf_buffer\n  buffer_pages: 256\n"
    )
    assert config.discovery == DiscoverySettings(
        enabled=False, exclude=("*-sidecar", "/opt/tools/*"), buffer="perf_buffer", buffer_pages=256
    )


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("discovery:\n  buffer: ringbuf\n", 2, "discovery.buffer"),
        ("discovery:\n  buffer_pages: 100\n", 2, "discovery.buffer_pages"),  # not a power of two
        ("discovery:\n  buffer_pages: 8192\n", 2, "discovery.buffer_pages"),
        ("discovery:\n  exclude: ['']\n", 2, "discovery.exclude"),
    ],
)
def test_bad_values_name_key_and_line(text: str, line: int, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, source="c.yaml")
    assert f"c.yaml:{line}: {key}" in str(info.value)


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'discovery\.poll_interval'"):
        parse_config_text("discovery:\n  poll_interval: 5s\n", source="c.yaml")


def _report(ringbuf: bool | None) -> ProbeReport:
    features = {} if ringbuf is None else {"ringbuf": Feature(ringbuf, "trial map")}
    return ProbeReport(kernel={}, features=features, components={})


def test_buffer_choice_follows_setting_then_capability_report() -> None:
    assert buffer_candidates("ring_buffer", _report(False)) == ["ring_buffer"]  # explicit wins
    assert buffer_candidates("perf_buffer") == ["perf_buffer"]
    assert buffer_candidates("auto") == ["ring_buffer", "perf_buffer"]
    assert buffer_candidates("auto", _report(True)) == ["ring_buffer", "perf_buffer"]
    assert buffer_candidates("auto", _report(False)) == ["perf_buffer"]
    assert buffer_candidates("auto", _report(None)) == ["ring_buffer", "perf_buffer"]  # not probed: try
