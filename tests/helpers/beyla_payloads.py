"""Fixed sample requests, shaped like Beyla v3.33's (shared/notes/beyla-facts.md §3), as protobuf and OTLP/JSON.

The protobuf ones are built with `beyla_otlp` (the one builder); the OTLP/JSON ones are written out by
hand, as Beyla's Go SDK lays them out, so that the JSON decoder is checked against text it did not
produce. Used by the receiver tests and bench/ingest.py.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from tests.helpers import beyla_otlp
from tests.helpers.beyla_otlp import (
    BEYLA_DURATION_BUCKETS,
    BEYLA_SCOPE,
    BEYLA_SIZE_BUCKETS,
    SECOND_NS,
    beyla_resource,
    grpc_server_attributes,
    grpc_server_span,
    histogram_metric,
    histogram_point,
    http_server_attributes,
    http_server_span,
    sql_client_attributes,
    sql_client_span,
    trace_request,
)

SERVICE = "checkout"
NAMESPACE = "shop"
PID = 4242
ROUTE = "/users/{id}"


def resource(service: str = SERVICE, pid: int = PID) -> Resource:
    return beyla_resource(service, pid=pid, namespace=NAMESPACE)


def traces_request(start_ns: int = 1_790_000_000_000_000_000) -> ExportTraceServiceRequest:
    """One HTTP server span with its SQL child, one gRPC server span and one 500 response."""
    trace_a, trace_b, trace_c = bytes(range(1, 17)), bytes(range(17, 33)), bytes(range(33, 49))
    spans = [
        http_server_span(
            trace_a, b"\x01" * 8, start_ns=start_ns, duration_ns=25_000_000, route=ROUTE, path="/users/42"
        ),
        sql_client_span(trace_a, b"\x02" * 8, b"\x01" * 8, start_ns=start_ns + 1_000_000, duration_ns=5_000_000),
        grpc_server_span(trace_b, b"\x03" * 8, start_ns=start_ns, duration_ns=3_000_000),
        http_server_span(
            trace_c, b"\x04" * 8, start_ns=start_ns, duration_ns=120_000_000, status=500, route=ROUTE, path="/users/42"
        ),
    ]
    return trace_request(resource(), spans)


def metrics_request(start_ns: int = 1_790_000_000_000_000_000, elapsed_s: int = 60) -> ExportMetricsServiceRequest:
    """Beyla's RED histograms (cumulative, seconds, default buckets) for HTTP, gRPC and SQL: 4 data points."""
    app = resource()
    http = http_server_attributes(app, "GET", ROUTE, 200)
    grpc = grpc_server_attributes(app, "/shop.Cart/AddItem", 0)
    sql = sql_client_attributes(app, "SELECT", "users")
    # (name, unit, description, point attributes, bucket counts, sum, bounds)
    table: list[tuple[str, str, str, dict[str, Any], list[int], float, tuple[float, ...]]] = [
        ("http.server.request.duration", "s", "Duration of HTTP server calls", http,
         [0, 10, 20, 30, 15, 10, 5, 5, 3, 1, 1, 0, 0, 0, 0, 0], 3.9, BEYLA_DURATION_BUCKETS),
        ("http.server.request.body.size", "By", "Size, in bytes, of the HTTP request body", http,
         [100] + [0] * len(BEYLA_SIZE_BUCKETS), 0.0, BEYLA_SIZE_BUCKETS),
        ("rpc.server.call.duration", "s", "Duration of RPC server calls", grpc,
         [0, 40, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0.21, BEYLA_DURATION_BUCKETS),
        ("db.client.operation.duration", "s", "Duration of db client operations", sql,
         [0, 70, 20, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0.62, BEYLA_DURATION_BUCKETS),
    ]  # fmt: skip
    now_ns = start_ns + elapsed_s * SECOND_NS
    metrics = [
        histogram_metric(
            name,
            [histogram_point(attributes, counts, total, start_ns=start_ns, time_ns=now_ns, bounds=bounds)],
            unit=unit,
            description=description,
        )
        for name, unit, description, attributes, counts, total, bounds in table
    ]
    return beyla_otlp.metrics_request(app, metrics)


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
            _json_attr("service.instance.id", f"node-1:{PID}"),
            _json_attr("telemetry.sdk.language", "go"),
            _json_attr("telemetry.sdk.name", "beyla"),
            _json_attr("host.name", "node-1"),
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
                        "scope": {"name": BEYLA_SCOPE},
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
                        "scope": {"name": BEYLA_SCOPE},
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
                                            "explicitBounds": list(BEYLA_DURATION_BUCKETS),
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
