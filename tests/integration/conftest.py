"""Integration tests: as root, on the running kernel, in a private network namespace."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.helpers.agent_process import CALL_REPORT
from tests.helpers.netns import enter_private_netns


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.root)


@pytest.fixture(scope="session", autouse=True)
def private_network_namespace() -> Iterator[int | None]:
    """Every server started by an integration test lives in this namespace, on loopback only."""
    if os.geteuid() != 0:
        yield None
        return
    yield enter_private_netns()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each test's call report, so that a fixture can print a running agent's log after a failure."""
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report
    return report
