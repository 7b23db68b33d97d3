"""Beyla YAML rendering: every dialect validates against Beyla's schema, and every `beyla:` key
either reaches the rendered config / the supervisor or is rejected with a message naming it."""

from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from coral_ebpf.agent.config import parse_config_text
from coral_ebpf.beyla.dialect import DIALECTS, LEGACY, V2, V3, V3_20, BeylaVersion
from coral_ebpf.beyla.render import (
    RenderError,
    RenderTarget,
    SelfExclusion,
    beyla_duration,
    render,
    service_selectors,
    write_config,
)
from coral_ebpf.beyla.schema import beyla_schema, schema_errors, schema_path
from coral_ebpf.beyla.settings import SCHEMA, BeylaSettings
from coral_ebpf.discovery.model import Listener, ServiceEntry
from coral_ebpf.errors import ConfigError

AGENT_PORTS = (4317, 4318)
BEYLA = Path("/usr/local/bin/beyla")
TARGET = RenderTarget(
    "http://127.0.0.1:4318",
    health_port=43210,
    exclusion=SelfExclusion(agent_pids=(4242,), agent_ports=AGENT_PORTS, beyla_binary=BEYLA),
)


def service(pid: int, exe: str, *ports: int, cmd: tuple[str, ...] = ()) -> ServiceEntry:
    return ServiceEntry(
        pid=pid,
        netns=1,
        name=Path(exe).name,
        exe=exe,
        cmdline=cmd or (exe,),
        listeners=tuple(Listener(p) for p in ports),
    )


SERVICES = [
    service(100, "/usr/bin/app", 8080, 9090),
    service(101, "/opt/api/server", 50051),
    service(102, "/usr/bin/python3.11", 4318, cmd=("python3", "/usr/local/bin/coral-ebpf", "start")),
    service(4242, "/usr/bin/python3.11", 7777),  # the agent's own pid
    service(103, str(BEYLA), 6060),
    service(104, "/usr/bin/app (deleted)", 8081),
    service(105, "/usr/bin/python3.11", 6061, cmd=("/usr/bin/python3.11", str(BEYLA), "-config", "x.yaml")),
]


def settings_from(beyla: dict[str, Any]) -> BeylaSettings:
    return parse_config_text(yaml.safe_dump({"beyla": beyla}), "test.yaml").beyla


def rendered(beyla: dict[str, Any] | None = None, dialect: Any = V3_20, services: Any = None) -> dict[str, Any]:
    result = render(settings_from(beyla or {}), SERVICES if services is None else services, TARGET, dialect)
    return result.document


# ------------------------------------------------------------------ dialects and the schema


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@pytest.mark.parametrize(
    "beyla",
    [
        {},
        {
            "routes": {
                "patterns": ["/users/{id}"],
                "ignored_patterns": ["/health"],
                "ignore_mode": "traces",
                "unmatched": "wildcard",
                "wildcard_char": "*",
            }
        },
        {"otlp_protocol": "grpc", "metrics_interval": "1500ms", "log_level": "debug"},
        {"instrument": [{"open_ports": "8000-8999"}, {"open_ports": 443}]},
    ],
    ids=["defaults", "routes", "grpc", "static-ports"],
)
def test_every_dialect_renders_a_config_beyla_schema_accepts(dialect: Any, beyla: dict[str, Any]) -> None:
    document = rendered(beyla, dialect)
    assert schema_errors(document) == []
    # The YAML text is the document.
    result = render(settings_from(beyla), SERVICES, TARGET, dialect)
    assert yaml.safe_load(result.text) == document


@pytest.mark.parametrize("dialect", [V2, V3, V3_20], ids=lambda d: d.name)
def test_full_configuration_renders_for_every_glob_dialect(dialect: Any) -> None:
    beyla = {
        "protocols": ["http", "grpc", "sql", "redis", "kafka"],
        "sampling": {"sampler": "traceidratio", "ratio": 0.25},
        "limits": {"traces_queue_size": 1000, "metrics_ttl": "10m"},
        "instrument": [{"exe_path": "/srv/*/bin/worker"}, {"open_ports": "7000", "exe_path": "/usr/bin/x"}],
        "traces_batch_timeout": "250ms",
    }
    assert schema_errors(rendered(beyla, dialect)) == []


def test_the_intenum_erratum_is_the_only_change_to_beylas_schema() -> None:
    original = json.loads(schema_path().read_text())
    patched = beyla_schema()
    assert patched["$defs"]["IntEnum"]["anyOf"][1] == {"$ref": "#/$defs/IntRange"}
    # Without the erratum, Beyla's own documented `open_ports: "8080"` does not validate.
    unpatched = Draft202012Validator(original)
    assert list(unpatched.iter_errors({"discovery": {"instrument": [{"open_ports": "8080"}]}}))
    # Apart from IntEnum and closing objects, nothing differs.
    stripped = copy.deepcopy(patched)
    stripped["$defs"]["IntEnum"] = original["$defs"]["IntEnum"]

    def drop_closed(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("additionalProperties") is False and "properties" in node:
                del node["additionalProperties"]
            for value in node.values():
                drop_closed(value)
        elif isinstance(node, list):
            for value in node:
                drop_closed(value)

    drop_closed(stripped)
    assert stripped == original


def test_validation_catches_a_misspelt_key_beyla_would_silently_ignore() -> None:
    document = rendered()
    document["otel_metric_export"] = document.pop("otel_metrics_export")
    assert any("otel_metric_export" in problem for problem in schema_errors(document))
    document = rendered()
    document["discovery"]["instrument"][0]["open_port"] = "1"
    assert any("open_port" in problem for problem in schema_errors(document))


def test_v320_dialect_has_healthz_and_metrics_features() -> None:
    document = rendered(dialect=V3_20)
    assert document["health_check"] == {"port": 43210, "listen_address": "127.0.0.1"}
    assert document["metrics"] == {"features": ["application"]}
    assert "features" not in document["otel_metrics_export"]


def test_v3_before_320_has_no_healthz() -> None:
    document = rendered(dialect=V3)
    assert "health_check" not in document
    assert document["metrics"] == {"features": ["application"]}


def test_v2_dialect_puts_features_under_otel_metrics_export() -> None:
    document = rendered(dialect=V2)
    assert document["otel_metrics_export"]["features"] == ["application"]
    assert "metrics" not in document and "health_check" not in document


def test_legacy_dialect_uses_top_level_open_port_only() -> None:
    document = rendered(dialect=LEGACY)
    assert document["open_port"] == "8080,8081,9090,50051"
    assert "discovery" not in document and "health_check" not in document


# ------------------------------------------------------------------ services, exclusions, no catch-all


def test_selectors_pair_ports_with_the_executable_and_skip_the_agent_and_beyla() -> None:
    selectors, skipped = service_selectors(SERVICES, TARGET.exclusion)
    assert selectors == [
        {"open_ports": "50051", "exe_path": "/opt/api/server"},
        {"open_ports": "8080,9090", "exe_path": "/usr/bin/app"},
        {"open_ports": "8081"},  # deleted executable: a glob on it would never match
    ]
    reasons = {entry.pid: entry.reason for entry in skipped}
    assert reasons == {102: "the agent itself", 4242: "the agent itself", 103: "Beyla itself", 105: "Beyla itself"}


def test_agent_ports_are_never_instrumented_even_in_another_process() -> None:
    other = service(200, "/usr/bin/proxy", 4318, 8443)
    selectors, _ = service_selectors([other], TARGET.exclusion)
    assert selectors == [{"open_ports": "8443", "exe_path": "/usr/bin/proxy"}]
    only_agent_port = service(201, "/usr/bin/proxy", 4317)
    selectors, skipped = service_selectors([only_agent_port], TARGET.exclusion)
    assert selectors == [] and skipped[0].reason == "listens only on the agent's own ports"


def test_exclusions_name_the_agent_its_ports_and_beyla() -> None:
    exclusions = rendered()["discovery"]["exclude_instrument"]
    assert {"cmd_args": "*coral-ebpf*"} in exclusions
    assert {"open_ports": "4317,4318"} in exclusions
    assert {"exe_path": str(BEYLA)} in exclusions
    assert {"target_pids": [4242]} in exclusions
    assert not [rule for rule in rendered(dialect=V3)["discovery"]["exclude_instrument"] if "target_pids" in rule]


def test_no_catch_all_rule_is_ever_emitted() -> None:
    for document in (rendered(), rendered(services=[]), rendered({"instrument": [{"open_ports": "80"}]})):
        for selector in document["discovery"]["instrument"]:
            assert selector.get("open_ports") not in ("1-65535", "0-65535")
            assert set(selector) - {"open_ports", "exe_path"} == set()


def test_rendering_is_deterministic_and_independent_of_discovery_order() -> None:
    settings = BeylaSettings()
    first = render(settings, SERVICES, TARGET)
    second = render(settings, list(reversed(SERVICES)), TARGET)
    assert first.text == second.text


def test_static_rules_are_added_to_discovered_services() -> None:
    document = rendered({"instrument": [{"open_ports": "8000-8999", "exe_path": "/srv/*"}, {"exe_path": "/bin/x"}]})
    assert {"open_ports": "8000-8999", "exe_path": "/srv/*"} in document["discovery"]["instrument"]
    assert {"exe_path": "/bin/x"} in document["discovery"]["instrument"]


def test_legacy_dialect_refuses_settings_it_cannot_carry_naming_the_key() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"protocols": ["http"]}, "beyla.protocols"),
        ({"sampling": {"sampler": "always_off"}}, "beyla.sampling"),
        ({"limits": {"traces_queue_size": 10}}, "beyla.limits.traces_queue_size"),
        ({"limits": {"metrics_ttl": "1m"}}, "beyla.limits.metrics_ttl"),
        ({"traces_batch_timeout": "2s"}, "beyla.traces_batch_timeout"),
        ({"instrument": [{"exe_path": "/bin/x"}]}, "beyla.instrument.0.exe_path"),
    ]
    for beyla, key in cases:
        with pytest.raises(RenderError, match=key.replace(".", r"\.")) as caught:
            render(settings_from(beyla), SERVICES, TARGET, LEGACY, BeylaVersion(2, 2, 4))
        assert "v2.2.4" in caught.value.message


def test_write_config_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    result = render(BeylaSettings(), SERVICES, TARGET)
    path = write_config(result, tmp_path / "state" / "beyla" / "beyla.yaml")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert yaml.safe_load(path.read_text()) == result.document
    assert [p.name for p in path.parent.iterdir()] == ["beyla.yaml"]


def test_durations_use_beylas_format() -> None:
    assert [beyla_duration(s) for s in (5, 0.25, 1.5, 60, 300, 0.001)] == ["5s", "250ms", "1500ms", "1m", "5m", "1ms"]


# ------------------------------------------------------------------ every key passed on or rejected


def _leaf_keys(schema: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        if "properties" in sub:
            keys |= _leaf_keys(sub, path + ".")
        elif sub.get("type") == "array" and "properties" in sub.get("items", {}):
            keys |= _leaf_keys(sub["items"], path + ".*.")
        else:
            keys.add(path)
    return keys


def _doc(beyla: dict[str, Any], dialect: Any = V3_20) -> dict[str, Any]:
    return rendered(beyla, dialect)


# key -> (a non-default value, a check that the value reached Beyla's config or the supervisor's settings)
PASSED_ON: dict[str, tuple[dict[str, Any], Any]] = {
    "enabled": ({"enabled": False}, lambda b: settings_from(b).enabled is False),
    "binary": ({"binary": "/opt/beyla"}, lambda b: settings_from(b).binary == Path("/opt/beyla")),
    "force_start": ({"force_start": True}, lambda b: settings_from(b).force_start is True),
    "log_level": ({"log_level": "warn"}, lambda b: _doc(b)["log_level"] == "WARN"),
    "otlp_protocol": ({"otlp_protocol": "grpc"}, lambda b: _doc(b)["otel_traces_export"]["protocol"] == "grpc"),
    "metrics_interval": ({"metrics_interval": "30s"}, lambda b: _doc(b)["otel_metrics_export"]["interval"] == "30s"),
    "traces_batch_timeout": (
        {"traces_batch_timeout": "3s"},
        lambda b: _doc(b)["otel_traces_export"]["batch_timeout"] == "3s",
    ),
    "shutdown_timeout": ({"shutdown_timeout": "20s"}, lambda b: _doc(b)["shutdown_timeout"] == "20s"),
    "debounce": ({"debounce": "9s"}, lambda b: settings_from(b).debounce == 9.0),
    "protocols": (
        {"protocols": ["http", "redis"]},
        lambda b: (
            _doc(b)["otel_metrics_export"]["instrumentations"] == ["http", "redis"]
            and _doc(b)["otel_traces_export"]["instrumentations"] == ["http", "redis"]
        ),
    ),
    "attributes": (
        {"attributes": {"deployment.environment": "prod"}},
        lambda b: settings_from(b).attributes == {"deployment.environment": "prod"},
    ),
    "routes.patterns": ({"routes": {"patterns": ["/u/{id}"]}}, lambda b: _doc(b)["routes"]["patterns"] == ["/u/{id}"]),
    "routes.ignored_patterns": (
        {"routes": {"ignored_patterns": ["/health"]}},
        lambda b: _doc(b)["routes"]["ignored_patterns"] == ["/health"],
    ),
    "routes.ignore_mode": (
        {"routes": {"ignored_patterns": ["/h"], "ignore_mode": "metrics"}},
        lambda b: _doc(b)["routes"]["ignore_mode"] == "metrics",
    ),
    "routes.unmatched": ({"routes": {"unmatched": "path"}}, lambda b: _doc(b)["routes"]["unmatched"] == "path"),
    "routes.wildcard_char": (
        {"routes": {"unmatched": "wildcard", "wildcard_char": "#"}},
        lambda b: _doc(b)["routes"]["wildcard_char"] == "#",
    ),
    "sampling.sampler": (
        {"sampling": {"sampler": "always_off"}},
        lambda b: _doc(b)["otel_traces_export"]["sampler"] == {"name": "always_off"},
    ),
    "sampling.ratio": (
        {"sampling": {"ratio": 0.1}},
        lambda b: _doc(b)["otel_traces_export"]["sampler"] == {"name": "parentbased_traceidratio", "arg": "0.1"},
    ),
    "histograms": (
        {"histograms": "explicit"},
        lambda b: _doc(b)["otel_metrics_export"]["histogram_aggregation"] == "explicit_bucket_histogram",
    ),
    "limits.memory_soft": (
        {"limits": {"memory_soft": "256MiB"}},
        lambda b: settings_from(b).limits.memory_soft == 256 * 1024**2,
    ),
    "limits.memory_max": ({"limits": {"memory_max": "1GiB"}}, lambda b: settings_from(b).limits.memory_max == 1024**3),
    "limits.traces_queue_size": (
        {"limits": {"traces_queue_size": 100}},
        lambda b: (
            _doc(b)["otel_traces_export"]["queue_size"] == 100 and _doc(b)["otel_traces_export"]["batch_max_size"] == 50
        ),
    ),
    "limits.metrics_ttl": ({"limits": {"metrics_ttl": "2m"}}, lambda b: _doc(b)["otel_metrics_export"]["ttl"] == "2m"),
    "instrument.*.open_ports": (
        {"instrument": [{"open_ports": 8000}]},
        lambda b: {"open_ports": "8000"} in _doc(b)["discovery"]["instrument"],
    ),
    "instrument.*.exe_path": (
        {"instrument": [{"exe_path": "/bin/*"}]},
        lambda b: {"exe_path": "/bin/*"} in _doc(b)["discovery"]["instrument"],
    ),
    "restart.backoff_initial": (
        {"restart": {"backoff_initial": "2s"}},
        lambda b: settings_from(b).restart.backoff_initial == 2.0,
    ),
    "restart.backoff_max": ({"restart": {"backoff_max": "1m"}}, lambda b: settings_from(b).restart.backoff_max == 60.0),
    "restart.healthy_reset": (
        {"restart": {"healthy_reset": "1m"}},
        lambda b: settings_from(b).restart.healthy_reset == 60.0,
    ),
    "restart.max_restarts": ({"restart": {"max_restarts": 3}}, lambda b: settings_from(b).restart.max_restarts == 3),
    "health.grace": ({"health": {"grace": "40s"}}, lambda b: settings_from(b).health.grace == 40.0),
    "health.interval": ({"health": {"interval": "3s"}}, lambda b: settings_from(b).health.interval == 3.0),
    "health.timeout": ({"health": {"timeout": "1s"}}, lambda b: settings_from(b).health.timeout == 1.0),
    "health.failures": ({"health": {"failures": 2}}, lambda b: settings_from(b).health.failures == 2),
}


def test_every_beyla_key_is_covered_by_a_passed_on_check() -> None:
    assert _leaf_keys(SCHEMA) == set(PASSED_ON)


@pytest.mark.parametrize("key", sorted(PASSED_ON))
def test_each_key_is_passed_on(key: str) -> None:
    beyla, check = PASSED_ON[key]
    assert check(beyla), key


@pytest.mark.parametrize(
    ("beyla", "message"),
    [
        ({"protocol": ["http"]}, "unknown key 'beyla.protocol'"),
        ({"routes": {"pattern": ["/x"]}}, "unknown key 'beyla.routes.pattern'"),
        ({"protocols": ["http2"]}, "beyla.protocols.0"),
        ({"attributes": {"service.name": "x"}}, "beyla.attributes.service.name"),
        ({"attributes": {"bad key": "x"}}, "beyla.attributes"),
        ({"sampling": {"sampler": "always_on", "ratio": 0.5}}, "beyla.sampling.ratio"),
        ({"sampling": {"sampler": "traceidratio"}}, "beyla.sampling.ratio"),
        ({"sampling": {"ratio": 2}}, "beyla.sampling.ratio"),
        ({"routes": {"ignore_mode": "all"}}, "beyla.routes.ignore_mode"),
        ({"routes": {"wildcard_char": "*"}}, "beyla.routes.wildcard_char"),
        ({"limits": {"memory_soft": "1MiB"}}, "beyla.limits.memory_soft"),
        ({"limits": {"memory_soft": "1GiB", "memory_max": "512MiB"}}, "beyla.limits.memory_max"),
        ({"limits": {"traces_queue_size": 1}}, "beyla.limits.traces_queue_size"),
        ({"metrics_interval": "0.5ms"}, "beyla.metrics_interval"),
        ({"metrics_interval": "1.2345s"}, "beyla.metrics_interval"),
        ({"instrument": [{}]}, "beyla.instrument.0"),
        ({"instrument": [{"open_ports": "80,70000"}]}, "beyla.instrument.0.open_ports"),
        ({"instrument": [{"open_ports": "http"}]}, "beyla.instrument.0.open_ports"),
        ({"instrument": [{"exe_path": "nginx"}]}, "beyla.instrument.0.exe_path"),
        ({"restart": {"backoff_initial": "10s", "backoff_max": "1s"}}, "beyla.restart.backoff_max"),
        ({"health": {"failures": 0}}, "beyla.health.failures"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(beyla: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(beyla)
    assert message in str(caught.value)


def test_beyla_is_asked_for_exponential_histograms_by_default() -> None:
    assert _doc({})["otel_metrics_export"]["histogram_aggregation"] == "base2_exponential_bucket_histogram"
