"""The ui: section, and the loopback rule `coral-ebpf ui` applies to its own endpoint."""

from __future__ import annotations

import pytest

from coral_ebpf.agent.config import parse_config_text
from coral_ebpf.errors import ConfigError
from coral_ebpf.ui.auth import is_loopback
from coral_ebpf.ui.settings import UiSettings


def test_on_by_default_and_can_be_turned_off() -> None:
    assert UiSettings.from_dict({}).enabled is True
    assert UiSettings.from_dict({"enabled": False}).enabled is False
    assert parse_config_text("ui:\n  enabled: false\n", "test").ui.enabled is False


def test_the_own_endpoint_of_earlier_drafts_is_gone() -> None:
    # The agent serves the view on the operator listener; a separate ui.endpoint is not a setting.
    with pytest.raises(ConfigError, match="endpoint"):
        parse_config_text("ui:\n  endpoint: 127.0.0.1:9465\n", "test")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
