from __future__ import annotations

import pytest

from coral_ebpf.agent.config import parse_config_text
from coral_ebpf.errors import ConfigError
from coral_ebpf.red.selection import choose_engine
from coral_ebpf.red.settings import RedSettings


def test_defaults() -> None:
    red = parse_config_text("log_level: info\n").red
    assert red == RedSettings()
    assert red.engine == "auto"
    assert red.temporality == "delta"
    assert red.export_interval == 10.0


def test_values_are_converted() -> None:
    red = parse_config_text(
        "red:\n"
        "  engine: bcc\n"
        "  routes: ['/users/{id}', '/api/*']\n"
        "  unmatched_routes: path\n"
        "  max_routes_per_service: 50\n"
        "  export_interval: 500ms\n"
        "  temporality: cumulative\n"
        "  traces: false\n"
        "  max_pending_spans: 10\n"
        "  max_connections: 1024\n"
        "  path_max: 64\n"
        "  pipeline_depth: 8\n"
        "  event_channel: perf_buffer\n"
        "  event_channel_size: 1MiB\n"
        "  track_preexisting_connections: false\n"
    ).red
    assert red == RedSettings(
        engine="bcc",
        routes=("/users/{id}", "/api/*"),
        unmatched_routes="path",
        max_routes_per_service=50,
        export_interval=0.5,
        temporality="cumulative",
        traces=False,
        max_pending_spans=10,
        max_connections=1024,
        path_max=64,
        pipeline_depth=8,
        event_channel="perf_buffer",
        event_channel_size=1024 * 1024,
        track_preexisting_connections=False,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("red:\n  engine: fast\n", "engine"),
        ("red:\n  routes: ['users']\n", "routes"),
        ("red:\n  routes: ['/a/{id']\n", "red.routes"),
        ("red:\n  path_max: 100\n", "path_max"),
        ("red:\n  pipeline_depth: 3\n", "pipeline_depth"),
        ("red:\n  export_interval: 10ms\n", "red.export_interval"),
        ("red:\n  event_channel_size: 1KiB\n", "red.event_channel_size"),
        ("red:\n  event_transport: perf\n", "red.event_transport was renamed to red.event_channel"),
        ("red:\n  event_buffer_size: 4MiB\n", "red.event_buffer_size was renamed to red.event_channel_size"),
        ("red:\n  temporality: both\n", "temporality"),
        ("red:\n  max_conections: 5\n", "max_conections"),
    ],
)
def test_bad_values_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config_text(text)


@pytest.mark.parametrize(
    ("setting", "facts", "engine", "reason"),
    [
        # facts: (the probe says Beyla can run, a Beyla binary is found, beyla.enabled)
        ("auto", (False, True, True), "bcc", "cannot run"),
        ("auto", (True, False, True), "bcc", "no Beyla binary"),
        ("auto", (False, False, True), "bcc", "cannot run"),
        ("auto", (True, True, True), "beyla", "can run"),
        ("auto", (True, True, False), "bcc", "beyla.enabled is false"),
        ("bcc", (True, True, True), "bcc", "red.engine is bcc"),
        ("beyla", (True, True, True), "beyla", "red.engine is beyla"),
        ("beyla", (False, False, True), "beyla", "cannot run on this kernel and no Beyla binary"),
    ],
)
def test_choose_engine(setting: str, facts: tuple[bool, bool, bool], engine: str, reason: str) -> None:
    chosen, why = choose_engine(setting, *facts)
    assert chosen == engine
    assert reason in why


def test_choose_engine_rejects_unknown() -> None:
    with pytest.raises(ConfigError, match=r"red\.engine"):
        choose_engine("fastest", True, True)
