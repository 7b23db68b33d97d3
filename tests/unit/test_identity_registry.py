"""The registry names entries through the identity resolver; a `services:` reload renames them, logged."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from coral_ebpf.agent.config import parse_config_text
from coral_ebpf.agent.reload import plan_reload
from coral_ebpf.discovery.exclusion import Exclusion
from coral_ebpf.discovery.identity import IdentityResolver, IdentityRule
from coral_ebpf.discovery.registry import ServiceRegistry, TrackedSocket
from coral_ebpf.probes.linux.procfs import ProcessInfo

INFO = ProcessInfo(
    pid=300,
    start_ticks=5,
    comm="python3",
    exe="/usr/bin/python3.11",
    cmdline=("python3", "-m", "uvicorn", "shop.api:app"),
    service_name="python3.11",
    cgroup="/user.slice/user-0.slice/session-1.scope",
    container_id=None,
)


def registry_with_one_service(resolver: IdentityResolver) -> ServiceRegistry:
    registry = ServiceRegistry(resolver)
    registry.put_process(INFO, 0)
    registry.add_socket(TrackedSocket(netns=1, family=2, address="127.0.0.1", port=8080, inode=77), INFO.pid)
    return registry


def test_entries_carry_the_identity_and_a_reload_renames_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="coral_ebpf.discovery.registry")
    registry = registry_with_one_service(IdentityResolver(hostname="h"))
    assert registry.publish()
    (entry,) = registry.snapshot()
    assert (entry.name, entry.rule, entry.instance_id("ignored")) == ("shop.api", IdentityRule.COMMAND_LINE, "h:300")
    assert registry.service_name(INFO.pid) == "shop.api"

    old = parse_config_text("")
    new = parse_config_text("services:\n  - {name: storefront, namespace: shop, open_ports: 8080}\n")
    plan = plan_reload(old, new)
    assert plan.applied == ("services",) and plan.services_changed and plan.config.services == new.services
    registry.set_resolver(IdentityResolver(plan.config.services, hostname="h"))
    assert registry.publish()
    (entry,) = registry.snapshot()
    assert (entry.name, entry.namespace, entry.rule) == ("storefront", "shop", IdentityRule.CONFIG)

    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["service appeared", "service appeared"]
    fields = [getattr(record, "fields", {}) for record in caplog.records]
    assert fields[0] == {"service": "shop.api", "rule": "command_line", "pid": 300, "ports": "8080"}
    assert fields[1]["service"] == "storefront" and fields[1]["namespace"] == "shop"

    registry.drop_process(INFO.pid)
    assert registry.publish()
    assert caplog.records[-1].getMessage() == "service left"


def test_discovery_exclude_matches_the_name_the_rules_give() -> None:
    name = IdentityResolver().resolve(INFO).name
    assert Exclusion(["shop.*"]).reason(INFO, name) == "matches discovery.exclude pattern 'shop.*'"
    assert Exclusion(["shop.*"]).reason(INFO) is None


def test_an_exec_renames_the_process() -> None:
    registry = registry_with_one_service(IdentityResolver(hostname="h"))
    assert registry.snapshot()[0].name == "shop.api"
    execd = dataclasses.replace(INFO, exe="/usr/bin/sleep", cmdline=("/usr/bin/sleep", "60"), comm="sleep")
    registry.put_process(execd, 0)  # same pid and start time: exec keeps the incarnation
    (entry,) = registry.snapshot()
    assert (entry.name, entry.rule) == ("sleep", IdentityRule.EXECUTABLE)
