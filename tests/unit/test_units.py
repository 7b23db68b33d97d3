from __future__ import annotations

import pytest

from coral_ebpf.units import format_duration, parse_duration, parse_endpoint, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("7d", 604800), (5, 5.0), ("2.5s", 2.5)],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "fast", "10 parsecs", "-1s", True])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)  # type: ignore[arg-type]


def test_format_duration_round_trips() -> None:
    for text in ("1h", "15m", "7d", "30s", "500ms"):
        assert format_duration(parse_duration(text)) == text


def test_parse_size() -> None:
    assert parse_size("16MiB") == 16 * 1024 * 1024
    assert parse_size("2GB") == 2_000_000_000
    assert parse_size(1024) == 1024
    with pytest.raises(ValueError):
        parse_size("lots")


def test_parse_endpoint() -> None:
    assert parse_endpoint("127.0.0.1:4317") == ("127.0.0.1", 4317)
    assert parse_endpoint("[::1]:4318") == ("::1", 4318)
    for bad in ("4317", "host:", "::1:4317", "h:70000"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)
