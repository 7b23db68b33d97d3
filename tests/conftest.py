"""Test-wide rules: root-only tests are skipped with a reason when not root.

Integration tests run inside a private network namespace (see tests/integration/conftest.py),
so no server a test starts is reachable from outside this machine.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip_root = pytest.mark.skip(reason="needs root: BPF programs and network namespaces (run make test as root)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip_root)
