"""Fixtures for discovery's integration tests (root, real kernel)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coral_ebpf.discovery.model import DiscoveryEvent
from coral_ebpf.discovery.registry import ServiceRegistry
from coral_ebpf.probes.headers import resolve_headers
from tests.helpers.netns import named_netns


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One agent state dir for the session, headers tree built once (it takes seconds)."""
    path = tmp_path_factory.mktemp("discovery-state")
    resolve_headers(path)
    return path


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own, where its listeners live."""
    with named_netns() as name:
        yield name


class EventLog:
    def __init__(self) -> None:
        self.items: list[DiscoveryEvent] = []

    def __call__(self, event: DiscoveryEvent) -> None:
        self.items.append(event)

    def of(self, pid: int, kind: str | None = None) -> list[DiscoveryEvent]:
        return [item for item in list(self.items) if item.tgid == pid and (kind is None or item.event == kind)]


def record_events(registry: ServiceRegistry) -> Iterator[EventLog]:
    log = EventLog()
    unsubscribe = registry.subscribe_events(log)
    try:
        yield log
    finally:
        unsubscribe()
