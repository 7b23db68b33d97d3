"""OTLP payloads shaped exactly like Beyla v3.33's (shared/notes/beyla-facts.md §3), as protobuf and OTLP/JSON.

Resource attributes, span names and kinds, span attributes, metric names, units, temporality
and the default buckets are Beyla's; the values are made up. Used by the receiver tests and
by bench/ingest.py, and available to the transform/storage tests.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

DURATION_BUCKETS = (0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
SIZE_BUCKETS = (0.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0)
SCOPE_NAME = "github.com/grafana/beyla"
SERVICE = "checkout"
NAMESPACE = "shop"
PID = 4242
HOST = "node-1"


def attr(key: str, value: str | int | float | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def resource_attributes(service: str = SERVICE, pid: int = PID) -> list[KeyValue]:
    return [
        attr("service.name", service),
        attr("service.namespace", NAMESPACE),
        attr("service.instance.id", f"{HOST}:{pid}"),
        attr("telemetry.sdk.language", "go"),
        attr("telemetry.sdk.name", "beyla"),
        attr("telemetry.sdk.version", "v3.33.0"),
        attr("telemetry.distro.name", "beyla"),
        attr("telemetry.distro.version", "v3.33.0"),
        attr("host.name", HOST),
        attr("host.id", "4d1e1c8a2f9b4f0c9e7d0a1b2c3d4e5f"),
        attr("os.type", "linux"),
        attr("process.pid", pid),
    ]


def http_server_span(
    trace_id: bytes, span_id: bytes, start_ns: int, duration_ns: int, status: int = 200
) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=trace_id,
        span_id=span_id,
        name="GET /users/{id}",
        kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + duration_ns,
        attributes=[
            attr("http.request.method", "GET"),
            attr("http.response.status_code", status),
            attr("url.path", "/users/42"),
            attr("url.scheme", "http"),
            attr("http.route", "/users/{id}"),
            attr("client.address", "10.0.0.7"),
            attr("server.address", "checkout.local"),
            attr("server.port", 8080),
            attr("http.request.body.size", 0),
            attr("http.response.body.size", 512),
        ],
        status=trace_pb2.Status(
            code=trace_pb2.Status.STATUS_CODE_ERROR if status >= 500 else trace_pb2.Status.STATUS_CODE_UNSET
        ),
    )


def grpc_server_span(trace_id: bytes, span_id: bytes, start_ns: int, duration_ns: int) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=trace_id,
        span_id=span_id,
        name="/shop.Cart/AddItem",
        kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + duration_ns,
        attributes=[
            attr("rpc.method", "/shop.Cart/AddItem"),
            attr("rpc.system.name", "grpc"),
            attr("rpc.response.status_code", 0),
            attr("server.address", "cart.local"),
            attr("server.port", 9090),
        ],
    )


def sql_client_span(trace_id: bytes, span_id: bytes, parent: bytes, start_ns: int, duration_ns: int) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name="SELECT users",
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + duration_ns,
        attributes=[
            attr("db.system.name", "postgresql"),
            attr("db.operation.name", "SELECT"),
            attr("db.collection.name", "users"),
            attr("db.namespace", "shop"),
            attr("server.address", "db.local"),
            attr("server.port", 5432),
        ],
    )


def traces_request(start_ns: int = 1_790_000_000_000_000_000) -> ExportTraceServiceRequest:
    """One HTTP server span with its SQL child, one gRPC server span and one 500 response."""
    trace_a, trace_b, trace_c = bytes(range(1, 17)), bytes(range(17, 33)), bytes(range(33, 49))
    spans = [
        http_server_span(trace_a, b"\x01" * 8, start_ns, 25_000_000),
        sql_client_span(trace_a, b"\x02" * 8, b"\x01" * 8, start_ns + 1_000_000, 5_000_000),
        grpc_server_span(trace_b, b"\x03" * 8, start_ns, 3_000_000),
        http_server_span(trace_c, b"\x04" * 8, start_ns, 120_000_000, status=500),
    ]
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(resource_attributes())
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = SCOPE_NAME
    scope_spans.spans.extend(spans)
    return request


def _histogram_point(
    attributes: list[KeyValue],
    bounds: tuple[float, ...],
    counts: list[int],
    total: float,
    *,
    start_ns: int,
    now_ns: int,
) -> metrics_pb2.HistogramDataPoint:
    assert len(counts) == len(bounds) + 1
    return metrics_pb2.HistogramDataPoint(
        attributes=attributes,
        start_time_unix_nano=start_ns,
        time_unix_nano=now_ns,
        count=sum(counts),
        sum=total,
        bucket_counts=counts,
        explicit_bounds=list(bounds),
    )


def _histogram(
    name: str, unit: str, description: str, points: list[metrics_pb2.HistogramDataPoint]
) -> metrics_pb2.Metric:
    return metrics_pb2.Metric(
        name=name,
        unit=unit,
        description=description,
        histogram=metrics_pb2.Histogram(
            data_points=points,
            aggregation_temporality=metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE,
        ),
    )


def metrics_request(start_ns: int = 1_790_000_000_000_000_000, elapsed_s: int = 60) -> ExportMetricsServiceRequest:
    """Beyla's RED histograms (cumulative, seconds, default buckets) for HTTP, gRPC and SQL: 4 data points."""
    now_ns = start_ns + elapsed_s * 1_000_000_000
    app = [attr("service.name", SERVICE), attr("service.namespace", NAMESPACE)]
    http_attrs = [
        *app,
        attr("http.request.method", "GET"),
        attr("http.response.status_code", 200),
        attr("url.scheme", "http"),
        attr("http.route", "/users/{id}"),
        attr("server.address", "checkout.local"),
        attr("server.port", 8080),
    ]
    http_duration = _histogram_point(
        http_attrs,
        DURATION_BUCKETS,
        [0, 10, 20, 30, 15, 10, 5, 5, 3, 1, 1, 0, 0, 0, 0, 0],
        3.9,
        start_ns=start_ns,
        now_ns=now_ns,
    )
    http_body = _histogram_point(
        http_attrs, SIZE_BUCKETS, [100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0.0, start_ns=start_ns, now_ns=now_ns
    )
    rpc_duration = _histogram_point(
        [
            *app,
            attr("rpc.method", "/shop.Cart/AddItem"),
            attr("rpc.system.name", "grpc"),
            attr("rpc.response.status_code", 0),
            attr("server.address", "cart.local"),
            attr("server.port", 9090),
        ],
        DURATION_BUCKETS,
        [0, 40, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        0.21,
        start_ns=start_ns,
        now_ns=now_ns,
    )
    sql_duration = _histogram_point(
        [
            *app,
            attr("db.operation.name", "SELECT"),
            attr("db.system.name", "postgresql"),
            attr("server.address", "db.local"),
        ],
        DURATION_BUCKETS,
        [0, 70, 20, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        0.62,
        start_ns=start_ns,
        now_ns=now_ns,
    )
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.extend(resource_attributes())
    scope_metrics = resource_metrics.scope_metrics.add()
    scope_metrics.scope.name = SCOPE_NAME
    scope_metrics.metrics.extend(
        [
            _histogram("http.server.request.duration", "s", "Duration of HTTP server calls", [http_duration]),
            _histogram("http.server.request.body.size", "By", "Size, in bytes, of the HTTP request body", [http_body]),
            _histogram("rpc.server.call.duration", "s", "Duration of RPC server calls", [rpc_duration]),
            _histogram("db.client.operation.duration", "s", "Duration of db client operations", [sql_duration]),
        ]
    )
    return request


# OTLP/JSON, written out by hand the way Beyla's Go SDK (otlptracehttp/otlpmetrichttp with JSON) lays it out:
# lowerCamelCase keys, hex ids, integer enums, int64 values as strings.


def _json_attr(key: str, value: str | int | float | bool) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def _json_resource() -> dict[str, Any]:
    return {
        "attributes": [
            _json_attr("service.name", SERVICE),
            _json_attr("service.namespace", NAMESPACE),
            _json_attr("service.instance.id", f"{HOST}:{PID}"),
            _json_attr("telemetry.sdk.language", "go"),
            _json_attr("telemetry.sdk.name", "beyla"),
            _json_attr("host.name", HOST),
            _json_attr("os.type", "linux"),
            _json_attr("process.pid", PID),
        ]
    }


def traces_json(start_ns: int = 1_790_000_000_000_000_000) -> bytes:
    """An HTTP server span and its SQL child as OTLP/JSON (2 spans)."""
    trace_id = "5b8efff798038103d269b633813fc60c"
    document = {
        "resourceSpans": [
            {
                "resource": _json_resource(),
                "scopeSpans": [
                    {
                        "scope": {"name": SCOPE_NAME},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": "EEE19B7EC3C1B174",  # upper case: ids are case-insensitive hex
                                "parentSpanId": "",
                                "name": "GET /users/{id}",
                                "kind": 2,
                                "startTimeUnixNano": str(start_ns),
                                "endTimeUnixNano": str(start_ns + 25_000_000),
                                "attributes": [
                                    _json_attr("http.request.method", "GET"),
                                    _json_attr("http.response.status_code", 200),
                                    _json_attr("url.path", "/users/42"),
                                    _json_attr("http.route", "/users/{id}"),
                                    _json_attr("server.port", 8080),
                                ],
                                "status": {"code": 0},
                            },
                            {
                                "traceId": trace_id,
                                "spanId": "eee19b7ec3c1b175",
                                "parentSpanId": "eee19b7ec3c1b174",
                                "name": "SELECT users",
                                "kind": 3,
                                "startTimeUnixNano": str(start_ns + 1_000_000),
                                "endTimeUnixNano": str(start_ns + 6_000_000),
                                "attributes": [
                                    _json_attr("db.system.name", "postgresql"),
                                    _json_attr("db.operation.name", "SELECT"),
                                ],
                                "status": {"code": 2, "message": "connection reset"},
                                "links": [
                                    {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}
                                ],
                            },
                        ],
                    }
                ],
            }
        ]
    }
    return json.dumps(document).encode()


def metrics_json(start_ns: int = 1_790_000_000_000_000_000) -> bytes:
    """`http.server.request.duration` as OTLP/JSON: one cumulative histogram point with Beyla's buckets."""
    counts = [0, 10, 20, 30, 15, 10, 5, 5, 3, 1, 1, 0, 0, 0, 0, 0]
    document = {
        "resourceMetrics": [
            {
                "resource": _json_resource(),
                "scopeMetrics": [
                    {
                        "scope": {"name": SCOPE_NAME},
                        "metrics": [
                            {
                                "name": "http.server.request.duration",
                                "unit": "s",
                                "histogram": {
                                    "aggregationTemporality": 2,
                                    "dataPoints": [
                                        {
                                            "attributes": [
                                                _json_attr("service.name", SERVICE),
                                                _json_attr("http.request.method", "GET"),
                                                _json_attr("http.response.status_code", 200),
                                                _json_attr("http.route", "/users/{id}"),
                                            ],
                                            "startTimeUnixNano": str(start_ns),
                                            "timeUnixNano": str(start_ns + 60_000_000_000),
                                            "count": str(sum(counts)),
                                            "sum": 3.9,
                                            "bucketCounts": [str(c) for c in counts],
                                            "explicitBounds": list(DURATION_BUCKETS),
                                            "exemplars": [
                                                {
                                                    "timeUnixNano": str(start_ns + 1),
                                                    "asDouble": 0.02,
                                                    "traceId": "5b8efff798038103d269b633813fc60c",
                                                    "spanId": "eee19b7ec3c1b174",
                                                }
                                            ],
                                        }
                                    ],
                                },
                            }
                        ],
                    }
                ],
            }
        ]
    }
    return json.dumps(document).encode()
