"""Beyla's data labelled as Beyla's: its `target.info` stream (empty resource, OBI scope) and the pid in
its `service.instance.id` when the resource has no `process.pid` (what a real Beyla v3.31.0 sends)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from coral_ebpf.storage.writer import Storage
from coral_ebpf.transform.processor import TransformProcessor
from coral_ebpf.transform.resource import pid_from_instance_id
from coral_ebpf.transform.senders import sender_name
from tests.helpers.beyla_otlp import http_server_span, key_values, new_ids, trace_request
from tests.helpers.datapath import data_path

NOW = time.time_ns()
OBI_SCOPE = "go.opentelemetry.io/obi"


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[tuple[Storage, TransformProcessor]]:
    with data_path(tmp_path) as parts:
        yield parts


def target_info_request() -> ExportMetricsServiceRequest:
    """Beyla's `target.info` export: an empty resource; only the scope names OBI."""
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.CopyFrom(Resource())
    scope_metrics = resource_metrics.scope_metrics.add()
    scope_metrics.scope.CopyFrom(InstrumentationScope(name=OBI_SCOPE))
    metric = Metric(name="target.info")
    point = metric.gauge.data_points.add(time_unix_nano=NOW, as_int=1)
    point.attributes.extend(key_values({"service.name": "checkout", "service.instance.id": "host:4321"}))
    scope_metrics.metrics.append(metric)
    return request


def test_the_sender_is_the_sdk_name_else_beyla_for_its_scopes() -> None:
    assert sender_name("opentelemetry", OBI_SCOPE) == "opentelemetry"
    assert sender_name(None, OBI_SCOPE) == "beyla"
    assert sender_name("", "github.com/grafana/beyla/v3") == "beyla"
    assert sender_name(None, "io.opentelemetry.jdbc") == ""
    assert sender_name(None, None) == ""


def test_the_pid_of_a_beyla_instance_id() -> None:
    assert pid_from_instance_id("web-1:4321") == 4321
    assert pid_from_instance_id("fe80::1:4321") == 4321  # an IPv6 host: the last field is the pid
    for value in ("4321", ":4321", "host:", "host:abc", "0b7e6d1c-3a52-4f7e-9a6c-1d2e3f4a5b6c", None, 4321):
        assert pid_from_instance_id(value) == 0


def test_target_info_is_counted_as_beyla(pipeline: tuple[Storage, TransformProcessor]) -> None:
    _, processor = pipeline
    processor.consume_metrics(target_info_request())
    sources = processor.status()["sources"]
    assert sources["beyla"]["metric_points"] == 1 and "unknown" not in sources
    assert processor.last_seen("beyla") is not None


def test_spans_take_the_pid_from_the_instance_id(pipeline: tuple[Storage, TransformProcessor]) -> None:
    storage, processor = pipeline
    # As Beyla v3.31.0 sends it: no process.pid, service.instance.id is <host>:<pid>.
    resource = Resource(
        attributes=key_values(
            {"service.name": "python3.11", "service.instance.id": "guest:5150", "telemetry.sdk.name": "beyla"}
        )
    )
    with_pid = Resource(
        attributes=key_values({"service.name": "api", "service.instance.id": "guest:1", "process.pid": 77})
    )
    processor.consume_traces(trace_request(resource, [http_server_span(*new_ids(), start_ns=NOW, duration_ns=10)]))
    processor.consume_traces(trace_request(with_pid, [http_server_span(*new_ids(), start_ns=NOW, duration_ns=10)]))
    storage.flush()
    rows = storage.reader().execute("SELECT service_name, process_pid FROM otel_spans ORDER BY service_name").fetchall()
    assert rows == [("api", 77), ("python3.11", 5150)]  # process.pid, when present, wins
    resources = storage.reader().execute("SELECT process_pid FROM otel_resources ORDER BY process_pid").fetchall()
    assert resources == [(77,), (5150,)]
