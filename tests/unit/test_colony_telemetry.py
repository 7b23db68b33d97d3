"""The colony's operator telemetry: its `telemetry:` section and the `TelemetrySource` over its status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from coral_ebpf.colony.settings import DEFAULT_COLONY_TELEMETRY_ENDPOINT, ColonyConfig, load_colony_config
from coral_ebpf.colony.telemetry_source import ColonyTelemetry
from coral_ebpf.errors import ConfigError
from coral_ebpf.telemetry.exposition import render


def _status(cycles: int = 3, polling: bool = True, beta_error: str | None = None) -> dict[str, Any]:
    def agent(agent_id: str, error: str | None) -> dict[str, Any]:
        return {
            "agent_id": agent_id,
            "last_success": 1_700_000_000.5,
            "last_error": error,
            "consecutive_failures": 2 if error else 0,
            "rows_stored": 120,
            "lag_rows": 0,
            "gaps": {"open": 1, "recovered": 0, "permanent": 0, "expired": 0, "abandoned": 0},
        }

    return {
        "database": {"path": "/x/colony.duckdb", "size_bytes": 4096, "rows": {"http": 200, "traces": 40}},
        "agents": [agent("alpha", None), agent("beta", beta_error)],
        "colony": {"version": "9.9", "pid": 7, "polling": polling, "agents_configured": ["alpha", "beta"]},
        "metrics": {
            "poll_cycles_total": cycles,
            "poll_cycle_seconds": 0.25,
            "rows_stored_total": 240,
            "rows_received_total": {"http": 200, "grpc": 0, "sql": 0, "traces": 40},
            "polls_failed_total": 2,
            "gaps_found_total": 1,
        },
    }


def test_telemetry_is_on_by_default_on_its_own_port_and_can_be_turned_off(tmp_path: Path) -> None:
    assert ColonyConfig.from_dict({}, "t").telemetry.endpoint == DEFAULT_COLONY_TELEMETRY_ENDPOINT == "127.0.0.1:9465"
    for off in ("", None):
        assert ColonyConfig.from_dict({"telemetry": {"endpoint": off}}, "t").telemetry.endpoint is None
    config_file = tmp_path / "colony.yaml"
    config_file.write_text("telemetry:\n  endpoint: 127.0.0.1:19465\n", encoding="utf-8")
    assert load_colony_config(config_file).telemetry.endpoint == "127.0.0.1:19465"
    config_file.write_text("telemetry:\n  endpiont: 127.0.0.1:1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="did you mean 'endpoint'"):
        load_colony_config(config_file)
    config_file.write_text("telemetry:\n  endpoint: 0.0.0.0:9465\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not loopback"):
        load_colony_config(config_file)


@pytest.mark.parametrize("openmetrics", [False, True])
def test_metrics_render_and_parse_in_both_formats(openmetrics: bool) -> None:
    text = render(ColonyTelemetry(lambda: _status(beta_error="UNAVAILABLE: down")).collect(), openmetrics=openmetrics)
    parse = parse_openmetrics if openmetrics else parse_text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parse(text)
        for sample in family.samples
    }
    assert samples[("coral_ebpf_colony_rows_stored_total", ())] == 240
    assert samples[("coral_ebpf_colony_rows_received_total", (("type", "traces"),))] == 40
    assert samples[("coral_ebpf_colony_poll_cycles_total", ())] == 3
    assert samples[("coral_ebpf_colony_poll_cycle_duration_seconds", ())] == 0.25
    assert samples[("coral_ebpf_colony_agent_up", (("agent_id", "alpha"),))] == 1
    assert samples[("coral_ebpf_colony_agent_up", (("agent_id", "beta"),))] == 0
    assert samples[("coral_ebpf_colony_agent_consecutive_failures", (("agent_id", "beta"),))] == 2
    assert samples[("coral_ebpf_colony_agent_gaps", (("agent_id", "alpha"), ("state", "open")))] == 1
    assert samples[("coral_ebpf_colony_database_rows", (("type", "http"),))] == 200
    assert samples[("coral_ebpf_colony_database_size_bytes", ())] == 4096
    assert samples[("coral_ebpf_colony_build_info", (("version", "9.9"),))] == 1


def test_health_and_readiness() -> None:
    assert ColonyTelemetry(_status).healthy().ok
    assert not ColonyTelemetry(lambda: _status(polling=False)).healthy().ok
    ready = ColonyTelemetry(lambda: _status(beta_error="UNAVAILABLE")).ready()
    # An agent that is down does not make the colony unready; the reason names it.
    assert ready.ok and ready.reason == "ready: 2 agents polled, database writing; failing: beta"
    first = ColonyTelemetry(lambda: _status(cycles=0)).ready()
    assert not first.ok and "first poll cycle" in first.reason
    assert not ColonyTelemetry(lambda: _status(polling=False)).ready().ok
