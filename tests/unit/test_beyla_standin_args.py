"""The stand-in reads its config the ways Beyla does: -config, --config, =forms, BEYLA_CONFIG_PATH wins."""

from __future__ import annotations

import pytest

from tests.beyla_standin.standin import config_path


@pytest.mark.parametrize(
    "argv",
    [["-config", "/a.yaml"], ["--config", "/a.yaml"], ["-config=/a.yaml"], ["--config=/a.yaml"]],
)
def test_flag_forms(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BEYLA_CONFIG_PATH", raising=False)
    assert config_path(argv) == "/a.yaml"


def test_environment_overrides_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEYLA_CONFIG_PATH", "/b.yaml")
    assert config_path(["-config", "/a.yaml"]) == "/b.yaml"
    monkeypatch.delenv("BEYLA_CONFIG_PATH")
    assert config_path([]) is None
