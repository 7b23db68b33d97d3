"""The `discovery:` config section: every key honoured or rejected with its line."""

from __future__ import annotations

import pytest

from coral_ebpf.agent.config import parse_config_text
from coral_ebpf.capabilities.report import Feature, ProbeReport
from coral_ebpf.discovery.component import ringbuf_available
from coral_ebpf.discovery.settings import DiscoverySettings
from coral_ebpf.errors import ConfigError
from coral_ebpf.probes.channel import Transport, transport_candidates


def test_defaults() -> None:
    assert parse_config_text("log_level: info\n").discovery == DiscoverySettings(
        enabled=True, exclude=(), event_channel="auto", event_channel_size=256 * 1024
    )


def test_every_key() -> None:
    config = parse_config_text(
        "discovery:\n  enabled: false\n  exclude: ['*-sidecar', /opt/tools/*]\n"
        "  event_channel: perf_buffer\n  event_channel_size: 1MiB\n"
    )
    assert config.discovery == DiscoverySettings(
        enabled=False, exclude=("*-sidecar", "/opt/tools/*"), event_channel="perf_buffer", event_channel_size=2**20
    )


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("discovery:\n  event_channel: ringbuf\n", 2, "discovery.event_channel"),
        ("discovery:\n  event_channel_size: lots\n", 2, "discovery.event_channel_size"),
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


@pytest.mark.parametrize(
    ("line", "old", "new"),
    [("buffer: perf_buffer", "buffer", "event_channel"), ("buffer_pages: 64", "buffer_pages", "event_channel_size")],
)
def test_renamed_keys_are_rejected_naming_the_new_key(line: str, old: str, new: str) -> None:
    with pytest.raises(ConfigError, match=rf"discovery\.{old} was renamed to discovery\.{new}"):
        parse_config_text(f"discovery:\n  {line}\n", source="c.yaml")


def test_a_channel_smaller_than_a_page_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"discovery\.event_channel_size: 1024 bytes is too small"):
        parse_config_text("discovery:\n  event_channel_size: 1KiB\n", source="c.yaml")


def _report(ringbuf: bool | None) -> ProbeReport:
    features = {} if ringbuf is None else {"ringbuf": Feature(ringbuf, "trial map")}
    return ProbeReport(kernel={}, features=features, components={})


def test_channel_choice_follows_setting_then_capability_report() -> None:
    ring, perf = Transport.RING_BUFFER, Transport.PERF_BUFFER
    assert transport_candidates("ring_buffer", ringbuf_available(_report(False))) == [ring]  # explicit wins
    assert transport_candidates("perf_buffer") == [perf]
    assert transport_candidates("auto") == [ring, perf]
    assert transport_candidates("auto", ringbuf_available(_report(True))) == [ring, perf]
    assert transport_candidates("auto", ringbuf_available(_report(False))) == [perf]
    assert transport_candidates("auto", ringbuf_available(_report(None))) == [ring, perf]  # not probed: try
