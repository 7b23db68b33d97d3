"""The /metrics exposition: both formats parse with the reference parsers and say what they should."""

from __future__ import annotations

import math

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from coral_ebpf.telemetry.exposition import (
    Histogram,
    MetricFamily,
    MetricType,
    Sample,
    format_number,
    render,
    wants_openmetrics,
)

FAMILIES = [
    MetricFamily(
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests.\nSecond line with a \\ backslash.",
        MetricType.HISTOGRAM,
        unit="seconds",
        histograms=[
            Histogram(
                (("service_name", "shop"), ("http_route", '/a"b\\c\n'), ("error_type", "")),
                (0.005, 0.1, 1.0),
                [2, 5, 7, 8],
                1.25,
            )
        ],
    ),
    MetricFamily(
        "coral_ebpf_receiver_items",
        "Items.",
        MetricType.COUNTER,
        samples=[Sample((("transport", "grpc"), ("outcome", "accepted")), 42), Sample((), 1.5)],
    ),
    MetricFamily("coral_ebpf_storage_queue_batches", "Queue.", MetricType.GAUGE, samples=[Sample((), 3)]),
    MetricFamily("coral_ebpf_build", "Build.", MetricType.INFO, samples=[Sample((("version", "1.2.3"),), 1)]),
    MetricFamily("coral_ebpf_empty", "Nothing yet.", MetricType.COUNTER),
]


def _samples(families: list[object]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples  # type: ignore[attr-defined]
    }


@pytest.mark.parametrize("openmetrics", [False, True])
def test_both_formats_parse_and_carry_every_value(openmetrics: bool) -> None:
    text = render(FAMILIES, openmetrics=openmetrics)
    families = list(parse_openmetrics(text) if openmetrics else parse_text(text))  # type: ignore[no-untyped-call]
    types = {family.name: family.type for family in families}
    assert types["http_server_request_duration_seconds"] == "histogram"
    assert types["coral_ebpf_receiver_items"] == "counter"
    assert types["coral_ebpf_storage_queue_batches"] == "gauge"
    assert types["coral_ebpf_build" if openmetrics else "coral_ebpf_build_info"] == ("info" if openmetrics else "gauge")
    samples = _samples(families)
    route = (("http_route", '/a"b\\c\n'), ("service_name", "shop"))  # the empty error_type is left out
    buckets = {
        le: samples[("http_server_request_duration_seconds_bucket", tuple(sorted((*route, ("le", le)))))]
        for le in ("0.005", "0.1", "1.0", "+Inf")
    }
    assert buckets == {"0.005": 2, "0.1": 5, "1.0": 7, "+Inf": 8}
    assert samples[("http_server_request_duration_seconds_count", route)] == 8
    assert samples[("http_server_request_duration_seconds_sum", route)] == 1.25
    assert samples[("coral_ebpf_receiver_items_total", (("outcome", "accepted"), ("transport", "grpc")))] == 42
    assert samples[("coral_ebpf_receiver_items_total", ())] == 1.5
    assert samples[("coral_ebpf_build_info", (("version", "1.2.3"),))] == 1
    assert "# HELP coral_ebpf_empty" in text


def test_text_format_declares_counters_with_total_and_openmetrics_without() -> None:
    text = render(FAMILIES)
    assert "# TYPE coral_ebpf_receiver_items_total counter\n" in text
    assert "# UNIT" not in text and not text.endswith("# EOF\n")
    openmetrics = render(FAMILIES, openmetrics=True)
    assert "# TYPE coral_ebpf_receiver_items counter\n" in openmetrics
    assert "# UNIT http_server_request_duration_seconds seconds\n" in openmetrics
    assert openmetrics.endswith("# EOF\n")
    assert "Second line with a \\\\ backslash." in openmetrics and "requests.\\nSecond" in openmetrics


def test_family_names_are_checked() -> None:
    with pytest.raises(ValueError, match="without _total"):
        MetricFamily("x_total", "", MetricType.COUNTER)
    with pytest.raises(ValueError, match="must end in _seconds"):
        MetricFamily("x_duration", "", MetricType.HISTOGRAM, unit="seconds")


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
            "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            True,
        ),
        ("text/plain", False),
        ("", False),
        ("*/*", False),
        ("application/openmetrics-text; q=0", False),
    ],
)
def test_accept_negotiation(accept: str, expected: bool) -> None:
    assert wants_openmetrics(accept) is expected


def test_numbers_are_formatted_like_go() -> None:
    assert [format_number(v) for v in (3, 3.0, 0.25, math.inf, -math.inf)] == ["3", "3", "0.25", "+Inf", "-Inf"]
    assert format_number(math.nan) == "NaN"
