"""Service identity: the one place that decides what a process is called.

Discovery, the built-in RED engine and the config rendered for Beyla all take the name from
here, so both engines report a process under the same `service.name`. The rules, first that
gives a name wins (docs/discovery.md):

1. environment — OTEL_SERVICE_NAME, `service.name` in OTEL_RESOURCE_ATTRIBUTES, SERVICE_NAME
2. config — the first `services:` entry whose selectors all match
3. systemd_unit — the service unit in the process's cgroup (`nginx.service` -> `nginx`)
4. container — the name Docker, Podman or containerd gave the container
5. command_line — the application an interpreter or runtime runs (`python3 -m shop.api` -> `shop.api`)
6. executable — the executable's file name (the task name if the executable is unreadable)

`service.namespace` comes from the matching `services:` entry, else from the environment
(OTEL_SERVICE_NAMESPACE or `service.namespace` in OTEL_RESOURCE_ATTRIBUTES).
`service.instance.id` is `<host name>:<pid>`, the format Beyla uses, so one process has one
instance id whichever engine reports it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from coral_ebpf.discovery.containers import container_name
from coral_ebpf.discovery.mapping import ProcessFacts, ServiceMapping, first_match
from coral_ebpf.discovery.naming import command_line_name, names_an_application, systemd_unit, unit_service_name
from coral_ebpf.probes.linux.procfs import ProcessInfo

_CONTAINER_CACHE_LIMIT = 1024


class IdentityRule(StrEnum):
    """Which rule named a service."""

    ENVIRONMENT = "environment"
    CONFIG = "config"
    SYSTEMD_UNIT = "systemd_unit"
    CONTAINER = "container"
    COMMAND_LINE = "command_line"
    EXECUTABLE = "executable"


@dataclass(frozen=True)
class ServiceIdentity:
    name: str
    namespace: str
    instance_id: str  # <host name>:<pid>
    rule: IdentityRule


def instance_id(hostname: str, pid: int) -> str:
    return f"{hostname}:{pid}"


class IdentityResolver:
    """Names processes by the rules above. `container_root` is where the runtimes' files hang from."""

    def __init__(
        self,
        mappings: Sequence[ServiceMapping] = (),
        hostname: str | None = None,
        container_root: Path = Path("/"),
    ) -> None:
        self.mappings = tuple(mappings)
        self.hostname = hostname or socket.gethostname()
        self.container_root = container_root
        self._containers: dict[str, str | None] = {}

    def _container(self, container_id: str | None) -> str | None:
        if not container_id:
            return None
        if container_id not in self._containers:
            if len(self._containers) >= _CONTAINER_CACHE_LIMIT:
                self._containers.clear()
            self._containers[container_id] = container_name(container_id, self.container_root)
        return self._containers[container_id]

    def resolve(self, info: ProcessInfo, ports: Sequence[int] = ()) -> ServiceIdentity:
        """The identity of `info`, listening on `ports` (the port selectors of `services:` need them)."""
        instance = instance_id(self.hostname, info.pid)
        namespace = info.environ_namespace
        if info.environ_name:
            return ServiceIdentity(info.environ_name, namespace, instance, IdentityRule.ENVIRONMENT)
        unit = systemd_unit(info.cgroup)
        container: str | None = None
        if self.mappings:
            container = self._container(info.container_id)
            facts = ProcessFacts(info.exe, info.cmdline, tuple(ports), unit, container)
            mapping = first_match(self.mappings, facts)
            if mapping is not None:
                return ServiceIdentity(mapping.name, mapping.namespace or namespace, instance, IdentityRule.CONFIG)
        if unit is not None and names_an_application(unit):
            return ServiceIdentity(unit_service_name(unit), namespace, instance, IdentityRule.SYSTEMD_UNIT)
        container = container or self._container(info.container_id)
        if container:
            return ServiceIdentity(container, namespace, instance, IdentityRule.CONTAINER)
        from_command = command_line_name(info.exe, info.cmdline)
        if from_command:
            return ServiceIdentity(from_command, namespace, instance, IdentityRule.COMMAND_LINE)
        executable = os.path.basename(info.exe) if info.exe else info.comm
        return ServiceIdentity(executable or f"pid-{info.pid}", namespace, instance, IdentityRule.EXECUTABLE)
