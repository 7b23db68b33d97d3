"""Instances of one service: rows per service.instance.id, the `instance` filter, and the table's column."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from coral_ebpf.cli.query_output import print_red
from coral_ebpf.query.dispatch import run_query
from coral_ebpf.storage.writer import Storage
from tests.helpers.beyla_otlp import (
    SECOND_NS,
    CumulativeHistogram,
    beyla_resource,
    http_server_attributes,
    http_server_span,
    metrics_request,
    trace_request,
    window_end,
)
from tests.helpers.datapath import data_path

T = time.time_ns() - 10 * SECOND_NS
UNTIL = window_end(T)
SHOP_A = beyla_resource("shop", pid=101)
SHOP_B = beyla_resource("shop", pid=202)
CART = beyla_resource("cart", pid=303)
TRACE_A, TRACE_B = os.urandom(16), os.urandom(16)


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    with data_path(tmp_path_factory.mktemp("instances")) as (storage, processor):
        for resource, requests in ((SHOP_A, 30), (SHOP_B, 12), (CART, 5)):
            histogram = CumulativeHistogram("http.server.request.duration", start_ns=T - 60 * SECOND_NS)
            histogram.record(http_server_attributes(resource, "GET", "/items", 200), 0.02, requests)
            processor.consume_metrics(metrics_request(resource, [histogram.export(T)]))
        for resource, trace_id in ((SHOP_A, TRACE_A), (SHOP_B, TRACE_B)):
            span = http_server_span(trace_id, os.urandom(8), start_ns=T - 5 * SECOND_NS, duration_ns=1_000_000)
            processor.consume_traces(trace_request(resource, [span]))
        storage.flush()
        yield storage


def red(storage: Storage, **params: Any) -> dict[str, Any]:
    return run_query(storage.reader(), "http", {"since": "10m", "until": UNTIL, **params})


def test_rows_tell_instances_apart(storage: Storage) -> None:
    rows = {(row["service"], row["instance"]): row["requests"] for row in red(storage)["rows"]}
    assert rows == {("shop", "testhost:101"): 30, ("shop", "testhost:202"): 12, ("cart", "testhost:303"): 5}
    grouped = red(storage, group="route")["rows"]  # another grouping: one row per service again
    assert {(row["service"], row["requests"]) for row in grouped} == {("shop", 42), ("cart", 5)}


def test_instance_filter(storage: Storage) -> None:
    (row,) = red(storage, instance="testhost:202")["rows"]
    assert (row["service"], row["requests"]) == ("shop", 12)
    assert {row["instance"] for row in red(storage, instance="testhost:[12]0*")["rows"]} == {
        "testhost:101",
        "testhost:202",
    }
    assert red(storage, instance="otherhost:*")["rows"] == []
    assert red(storage, instance="testhost:202", by="1m")["series"]  # the timeline takes the filter too


def test_the_table_shows_instances_only_when_a_service_has_several(
    storage: Storage, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    print_red(red(storage), {"since": "10m"})
    several = capsys.readouterr().out
    assert "Instance" in several and "testhost:101" in several and "testhost:202" in several
    print_red(red(storage, service="cart"), {"since": "10m", "service": "cart"})
    assert "Instance" not in capsys.readouterr().out


def test_traces_through_one_instance(storage: Storage) -> None:
    def trace_ids(**params: Any) -> set[str]:
        result = run_query(storage.reader(), "traces", {"since": "10m", "until": UNTIL, **params})
        return {trace["trace_id"] for trace in result["traces"]}

    assert trace_ids(service="shop") == {TRACE_A.hex(), TRACE_B.hex()}
    assert trace_ids(instance="testhost:202") == {TRACE_B.hex()}
    assert trace_ids(instance="otherhost:*") == set()
