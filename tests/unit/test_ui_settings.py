"""The ui: section and the web view's token rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from coral_ebpf.errors import ConfigError
from coral_ebpf.ui.auth import is_loopback
from coral_ebpf.ui.settings import UiSettings


def test_off_by_default_and_loopback_needs_no_token() -> None:
    assert UiSettings.from_dict({}).endpoint is None
    assert UiSettings.from_dict({"endpoint": ""}).endpoint is None
    settings = UiSettings.from_dict({"endpoint": "127.0.0.1:9465"})
    assert settings.endpoint == "127.0.0.1:9465" and settings.token() is None


@pytest.mark.parametrize("endpoint", ["0.0.0.0:9465", "10.1.2.3:80", "[::]:9465", "example.org:9465"])
def test_other_addresses_need_a_token_file(endpoint: str) -> None:
    with pytest.raises(ConfigError, match=r"ui\.token_file"):
        UiSettings.from_dict({"endpoint": endpoint})


def test_the_token_file_must_hold_a_long_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    settings = UiSettings.from_dict({"endpoint": "0.0.0.0:9465", "token_file": str(token_file)})
    with pytest.raises(ConfigError, match="No such file"):
        settings.token()
    token_file.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16"):
        settings.token()
    token_file.write_text("a-long-enough-random-token\n")
    assert settings.token() == "a-long-enough-random-token"


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
