"""The one builder of OTLP requests shaped exactly like Beyla's (notes/beyla-facts.md §3).

Metrics: Float64 explicit-bucket histograms in seconds, cumulative, Beyla's default duration
buckets, `start_time` = the exporter's start, `service.name`/`service.namespace` repeated as
data-point attributes. Spans: Beyla's names, kinds and attributes.

`CumulativeHistogram` plays the part of Beyla's SDK: record observations, export a
cumulative point per attribute set at a given time; `histogram_point` builds one point from
bucket counts directly. Fixed sample requests built with these live in `beyla_payloads.py`.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, HistogramDataPoint, Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

BEYLA_DURATION_BUCKETS = (0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
BEYLA_SIZE_BUCKETS = (0.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0)
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
SECOND_NS = 1_000_000_000


def window_end(time_ns: int) -> float:
    """The unix seconds a query's `until` must be to include a point stored at `time_ns`.

    Stored times are rounded to the microsecond. The microsecond at or after `time_ns` (integer
    arithmetic: `time_ns / 1000` as a float is only good to 0.25 µs, and `round` then picks the even
    neighbour of an x.5, which left a point stored at ...767 µs out of a window ending at ...766)
    is never before the stored one; as a float it is within 0.12 µs, which the query rounds back to it.
    """
    return -(-time_ns // 1000) / 1e6


BEYLA_SCOPE = "github.com/grafana/beyla/v3"


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    return AnyValue(string_value=str(value))


def key_values(attributes: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=any_value(value)) for key, value in attributes.items()]


def beyla_resource(service: str, pid: int = 4242, namespace: str = "", sdk_name: str = "beyla") -> Resource:
    attributes: dict[str, Any] = {
        "service.name": service,
        "service.instance.id": f"testhost:{pid}",
        "telemetry.sdk.language": "go",
        "telemetry.sdk.name": sdk_name,
        "telemetry.sdk.version": "3.33.0",
        "telemetry.distro.name": "beyla",
        "telemetry.distro.version": "3.33.0",
        "host.name": "testhost",
        "host.id": "0123456789abcdef",
        "os.type": "linux",
        "process.pid": pid,
    }
    if namespace:
        attributes["service.namespace"] = namespace
    return Resource(attributes=key_values(attributes))


def app_attributes(resource: Resource) -> dict[str, Any]:
    """Beyla repeats service.name and service.namespace as data-point attributes."""
    found = {kv.key: kv.value.string_value for kv in resource.attributes}
    return {key: found[key] for key in ("service.name", "service.namespace") if key in found}


@dataclass
class CumulativeHistogram:
    """One histogram metric as an SDK keeps it: cumulative counts per attribute set."""

    name: str
    unit: str = "s"
    bounds: tuple[float, ...] = BEYLA_DURATION_BUCKETS
    start_ns: int = 0
    series: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = field(default_factory=dict)

    def record(self, attributes: Mapping[str, Any], value: float, times: int = 1) -> None:
        key = tuple(attributes.items())
        state = self.series.setdefault(
            key, {"counts": [0] * (len(self.bounds) + 1), "sum": 0.0, "min": None, "max": None}
        )
        # OTel explicit buckets are upper-inclusive: bucket i holds bounds[i-1] < v <= bounds[i].
        state["counts"][bisect.bisect_left(self.bounds, value)] += times
        state["sum"] += value * times
        state["min"] = value if state["min"] is None else min(state["min"], value)
        state["max"] = value if state["max"] is None else max(state["max"], value)

    def export(self, time_ns: int) -> Metric:
        points = [
            histogram_point(
                dict(key),
                state["counts"],
                state["sum"],
                start_ns=self.start_ns,
                time_ns=time_ns,
                bounds=self.bounds,
                low=state["min"],
                high=state["max"],
            )
            for key, state in self.series.items()
        ]
        return histogram_metric(self.name, points, unit=self.unit)


def histogram_point(
    attributes: Mapping[str, Any],
    counts: Iterable[int],
    total: float,
    *,
    start_ns: int,
    time_ns: int,
    bounds: tuple[float, ...] = BEYLA_DURATION_BUCKETS,
    low: float | None = None,
    high: float | None = None,
) -> HistogramDataPoint:
    """One explicit-bucket point: `counts` has one more entry than `bounds` (the +Inf bucket)."""
    counts = list(counts)
    assert len(counts) == len(bounds) + 1, f"{len(counts)} bucket counts for {len(bounds)} bounds"
    return HistogramDataPoint(
        attributes=key_values(attributes),
        start_time_unix_nano=start_ns,
        time_unix_nano=time_ns,
        count=sum(counts),
        sum=total,
        bucket_counts=counts,
        explicit_bounds=list(bounds),
        min=low,
        max=high,
    )


def histogram_metric(
    name: str, points: Iterable[HistogramDataPoint], *, unit: str = "s", description: str = "duration"
) -> Metric:
    """A cumulative histogram metric, as Beyla exports it."""
    metric = Metric(name=name, unit=unit, description=description)
    metric.histogram.aggregation_temporality = CUMULATIVE
    metric.histogram.data_points.extend(points)
    return metric


def metrics_request(resource: Resource, metrics: Iterable[Metric]) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.CopyFrom(resource)
    scope_metrics = resource_metrics.scope_metrics.add()
    scope_metrics.scope.CopyFrom(InstrumentationScope(name=BEYLA_SCOPE))
    scope_metrics.metrics.extend(metrics)
    return request


def http_server_attributes(
    resource: Resource, method: str, route: str, status: int, port: int = 8080, *, old_names: bool = False
) -> dict[str, Any]:
    if old_names:
        return {**app_attributes(resource), "http.method": method, "http.status_code": status, "http.route": route}
    return {
        **app_attributes(resource),
        "http.request.method": method,
        "http.response.status_code": status,
        "url.scheme": "http",
        "http.route": route,
        "server.address": "localhost",
        "server.port": port,
    }


def grpc_server_attributes(resource: Resource, method: str, code: int, *, old_names: bool = False) -> dict[str, Any]:
    if old_names:
        return {**app_attributes(resource), "rpc.method": method, "rpc.system": "grpc", "rpc.grpc.status_code": code}
    return {
        **app_attributes(resource),
        "rpc.method": method,
        "rpc.system.name": "grpc",
        "rpc.response.status_code": code,
        "server.address": "localhost",
        "server.port": 50051,
    }


def sql_client_attributes(
    resource: Resource, operation: str, table: str, error: str | None = None, *, old_names: bool = False
) -> dict[str, Any]:
    attributes: dict[str, Any] = {**app_attributes(resource)}
    if old_names:
        attributes.update({"db.operation": operation, "db.system": "postgresql", "db.sql.table": table})
    else:
        attributes.update({"db.operation.name": operation, "db.system.name": "postgresql", "db.collection.name": table})
        attributes["server.address"] = "db.local"
    if error:
        attributes["error.type"] = error
    return attributes


def new_ids() -> tuple[bytes, bytes]:
    return os.urandom(16), os.urandom(8)


def http_server_span(
    trace_id: bytes,
    span_id: bytes,
    *,
    start_ns: int,
    duration_ns: int,
    method: str = "GET",
    route: str = "/api/users/{id}",
    path: str = "/api/users/42",
    status: int = 200,
    parent_span_id: bytes = b"",
    extra: Mapping[str, Any] | None = None,
) -> Span:
    """A Beyla HTTP server span; `extra` adds or overrides attributes."""
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=f"{method} {route}",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + duration_ns,
        attributes=key_values(
            {
                "http.request.method": method,
                "http.response.status_code": status,
                "url.path": path,
                "url.scheme": "http",
                "http.route": route,
                "client.address": "127.0.0.1",
                "server.address": "localhost",
                "server.port": 8080,
                "http.request.body.size": 0,
                "http.response.body.size": 123,
                **(extra or {}),
            }
        ),
    )
    if status >= 500:
        span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR))
    return span


def grpc_server_span(
    trace_id: bytes,
    span_id: bytes,
    *,
    start_ns: int,
    duration_ns: int,
    method: str = "/shop.Cart/AddItem",
    code: int = 0,
) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        name=method,
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + duration_ns,
        attributes=key_values(
            {
                "rpc.method": method,
                "rpc.system.name": "grpc",
                "rpc.response.status_code": code,
                "server.address": "localhost",
                "server.port": 50051,
            }
        ),
    )


def sql_client_span(
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: bytes,
    *,
    start_ns: int,
    duration_ns: int,
    extra: Mapping[str, Any] | None = None,
) -> Span:
    """A Beyla SQL client span; `extra` adds or overrides attributes."""
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name="SELECT users",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + duration_ns,
        attributes=key_values(
            {
                "db.system.name": "postgresql",
                "db.operation.name": "SELECT",
                "db.collection.name": "users",
                **(extra or {}),
            }
        ),
    )


def trace_request(resource: Resource, spans: Iterable[Span]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.CopyFrom(resource)
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.CopyFrom(InstrumentationScope(name=BEYLA_SCOPE))
    scope_spans.spans.extend(spans)
    return request
