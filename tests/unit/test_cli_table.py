"""The plain-text table layout: shortening in the middle, numbers kept whole, columns hidden last."""

from __future__ import annotations

import pytest

from coral_ebpf.cli.table import Shrink, number, output_width, render, shorten_middle, text


@pytest.mark.parametrize(
    ("width", "expected"),
    [
        (40, "/api/v1/orders/12345/items/{id}"),
        (20, "/api/v1/…/items/{id}"),
        (14, "/api/…/{id}"),
        (10, "/api/…{id}"),
    ],
)
def test_routes_are_shortened_by_whole_segments(width: int, expected: str) -> None:
    shortened = shorten_middle("/api/v1/orders/12345/items/{id}", width)
    assert shortened == expected and len(shortened) <= width


def test_names_without_slashes_keep_both_ends() -> None:
    assert shorten_middle("checkout-service-production-eu", 12) == "checko…on-eu"


def test_numbers_never_shrink_and_columns_go_in_their_order() -> None:
    columns = [
        text("Route", shrink=Shrink.MIDDLE, min_width=20),
        number("Requests"),
        number("Extra", drop_order=1),
        number("Less", drop_order=2),
    ]
    rows = [["/a/very/long/route/with/many/segments/{id}", 123456789, 1.5, 7]]
    lines = render(columns, rows, width=40, title="T", footer="a footer that is long enough to be wrapped here")
    assert all(len(line) <= 40 for line in lines), lines
    header, _, row = lines[1:4]
    assert header.split() == ["Route", "Requests", "Less"]
    assert row.split()[1:] == ["123456789", "7"] and "…" in row.split()[0]
    assert "(Extra hidden at this width; --wide shows every column)" in " ".join(lines)


def test_no_width_means_nothing_is_cut() -> None:
    rows = [["/a/very/long/route/with/many/segments/{id}", 1]]
    lines = render([text("Route", shrink=Shrink.MIDDLE), number("N", drop_order=1)], rows, width=None)
    assert lines[2].split() == ["/a/very/long/route/with/many/segments/{id}", "1"]


def test_the_width_comes_from_columns_or_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "93")
    assert output_width() == 93 and output_width(wide=True) is None
    monkeypatch.delenv("COLUMNS")
    assert output_width() is None  # pytest captures stdout: not a terminal
