"""plan_reload: which changed keys apply live, which wait for a restart, and the running config after."""

from __future__ import annotations

from coral_ebpf.agent.config import parse_config_text
from coral_ebpf.agent.reload import plan_reload

BASE = """
state_dir: /tmp/coral-reload-test
log_level: info
discovery: {exclude: ["*/sshd"]}
red: {routes: ["/a"]}
beyla: {log_level: info, attributes: {env: prod}}
storage: {retention: 1h}
"""


def test_nothing_changed() -> None:
    config = parse_config_text(BASE)
    plan = plan_reload(config, parse_config_text(BASE))
    assert plan.applied == () and plan.needs_restart == ()
    assert plan.config == config


def test_live_keys_apply_and_the_rest_waits() -> None:
    old = parse_config_text(BASE)
    new = parse_config_text(
        BASE.replace("log_level: info\n", "log_level: debug\n")
        .replace('"*/sshd"', '"*/sshd", "*/cron"')
        .replace('"/a"', '"/b/{id}"')
        .replace("{log_level: info, attributes: {env: prod}}", "{log_level: debug, attributes: {env: dev}}")
        .replace("retention: 1h", "retention: 2h")
        + "otlp: {grpc_endpoint: 127.0.0.1:14317}\n"
    )
    plan = plan_reload(old, new)
    assert set(plan.applied) == {"log_level", "discovery.exclude", "red.routes", "beyla.log_level"}
    assert set(plan.needs_restart) == {"storage.retention", "otlp.grpc_endpoint", "beyla.attributes"}
    running = plan.config
    assert running.log_level == "debug" and running.discovery.exclude == ("*/sshd", "*/cron")
    assert running.red.routes == ("/b/{id}",) and running.beyla.log_level == "debug"
    # Keys that need a restart keep their running values.
    assert running.storage.retention == old.storage.retention and running.otlp == old.otlp
    assert dict(running.beyla.attributes) == {"env": "prod"}
    assert plan.beyla_changed and plan.red_routes_changed and plan.exclude_changed and plan.logging_changed


def test_ignore_list_folding_and_sampling_apply_live() -> None:
    old = parse_config_text(BASE)
    new = parse_config_text(
        BASE.replace(
            'red: {routes: ["/a"]}',
            'red: {routes: ["/a"], ignored_routes: ["/ping"], fold_not_found: false, sampling: {ratio: 0.2}}',
        )
    )
    plan = plan_reload(old, new)
    assert set(plan.applied) == {"red.ignored_routes", "red.fold_not_found", "red.sampling"}
    assert plan.needs_restart == ()
    red = plan.config.red
    assert red.ignored_routes == ("/ping",) and not red.fold_not_found and red.sampling.ratio == 0.2
