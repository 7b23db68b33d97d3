"""Senders that remember exactly what the agent acknowledged, and a count of what it stored.

Each sender pushes raw OTLP protobuf over a real transport (grpcio for gRPC, http.client for
OTLP/HTTP) with ids no other request uses: every span has its own span id, every metric point
its own `http.route` (delta histograms, one point per series). An item counts as acknowledged
only when its request was answered OK with no partial-success rejection. A refused or failed
request is not re-sent (a real SDK would; here it would only blur which attempt was stored).

Used by tests/integration/test_durability.py and bench/durability.py.
"""

from __future__ import annotations

import http.client
import itertools
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, HistogramDataPoint, Metric

from tests.helpers import beyla_otlp

TRACES_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_PATH = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
SERVICE = "durability"
_RESOURCE = beyla_otlp.beyla_resource(SERVICE)
_BOUNDS = list(beyla_otlp.BEYLA_DURATION_BUCKETS)


@dataclass
class Ledger:
    """What was acknowledged, and how requests ended (thread-safe)."""

    spans: set[int] = field(default_factory=set)
    routes: set[str] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acknowledged(self, spans: list[int], routes: list[str]) -> None:
        with self.lock:
            self.spans.update(spans)
            self.routes.update(routes)
            self.outcomes["ok"] += 1

    def failed(self, outcome: str) -> None:
        with self.lock:
            self.outcomes[outcome] += 1

    @property
    def items(self) -> int:
        return len(self.spans) + len(self.routes)


_request_numbers = itertools.count(1)


def _span_id(sender: int, request: int, index: int) -> int:
    return (sender << 56) | (request << 16) | index


def traces_request(sender: int, spans: int) -> tuple[bytes, list[int]]:
    request_number = next(_request_numbers)
    now = time.time_ns()
    ids = [_span_id(sender, request_number, i) for i in range(spans)]
    built = [
        beyla_otlp.http_server_span(
            struct.pack(">QQ", request_number, span_id), struct.pack(">Q", span_id), start_ns=now, duration_ns=1_000_000
        )
        for span_id in ids
    ]
    return beyla_otlp.trace_request(_RESOURCE, built).SerializeToString(), ids


def metrics_request(sender: int, points: int) -> tuple[bytes, list[str]]:
    request_number = next(_request_numbers)
    now = time.time_ns()
    routes = [f"/d/{sender}/{request_number}/{i}" for i in range(points)]
    metric = Metric(name="http.server.request.duration", unit="s", description="duration")
    metric.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    for route in routes:
        attributes = beyla_otlp.http_server_attributes(_RESOURCE, "GET", route, 200)
        counts = [0] * (len(_BOUNDS) + 1)
        counts[3] = 1
        metric.histogram.data_points.append(
            HistogramDataPoint(
                attributes=beyla_otlp.key_values(attributes),
                start_time_unix_nano=now - 1_000_000_000,
                time_unix_nano=now,
                count=1,
                sum=0.01,
                bucket_counts=counts,
                explicit_bounds=_BOUNDS,
            )
        )
    return beyla_otlp.metrics_request(_RESOURCE, [metric]).SerializeToString(), routes


class Sender(threading.Thread):
    """One sender: `transport` grpc|http, `signal` traces|metrics, until `stop` is set."""

    def __init__(
        self,
        number: int,
        transport: str,
        signal: str,
        address: str,
        *,
        ledger: Ledger,
        stop: threading.Event,
        items_per_request: int = 200,
        pause: float = 0.0,
    ) -> None:
        super().__init__(name=f"sender-{number}-{transport}-{signal}", daemon=True)
        self.number, self.transport, self.signal, self.address = number, transport, signal, address
        self.ledger, self.stop = ledger, stop
        self.items_per_request = items_per_request
        self.pause = pause
        self.requests = 0

    def run(self) -> None:
        channel = grpc.insecure_channel(self.address) if self.transport == "grpc" else None
        try:
            while not self.stop.is_set():
                self.send_one(channel)
                if self.pause:
                    time.sleep(self.pause)
        finally:
            if channel is not None:
                channel.close()

    def send_one(self, channel: grpc.Channel | None = None) -> str:
        """Send one request; return its outcome (ok, or why not)."""
        self.requests += 1
        spans: list[int] = []
        routes: list[str] = []
        if self.signal == "traces":
            body, spans = traces_request(self.number, self.items_per_request)
        else:
            body, routes = metrics_request(self.number, max(1, self.items_per_request // 10))
        outcome = self._grpc(channel, body) if self.transport == "grpc" else self._http(body)
        if outcome == "ok":
            self.ledger.acknowledged(spans, routes)
        else:
            self.ledger.failed(outcome)
        return outcome

    def _grpc(self, channel: grpc.Channel | None, body: bytes) -> str:
        assert channel is not None
        path = TRACES_PATH if self.signal == "traces" else METRICS_PATH
        response_type = ExportTraceServiceResponse if self.signal == "traces" else ExportMetricsServiceResponse
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=response_type.FromString)
        try:
            response = call(body, timeout=10)
        except grpc.RpcError as exc:
            return f"grpc {exc.code().name}"
        return "ok" if not _rejected(response) else "partial"

    def _http(self, body: bytes) -> str:
        host, _, port = self.address.rpartition(":")
        path = "/v1/traces" if self.signal == "traces" else "/v1/metrics"
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/x-protobuf"})
            response = connection.getresponse()
            payload = response.read()
        except OSError as exc:
            return f"http {type(exc).__name__}"
        finally:
            connection.close()
        if response.status != 200:
            return f"http {response.status}"
        parsed = (ExportTraceServiceResponse if self.signal == "traces" else ExportMetricsServiceResponse)()
        parsed.ParseFromString(payload)
        return "ok" if not _rejected(parsed) else "partial"


def _rejected(response: ExportTraceServiceResponse | ExportMetricsServiceResponse) -> bool:
    if isinstance(response, ExportTraceServiceResponse):
        return response.partial_success.rejected_spans > 0
    return response.partial_success.rejected_data_points > 0


@dataclass(frozen=True)
class Comparison:
    acknowledged: int
    lost: int  # acknowledged, not stored
    duplicates: int  # stored more than once
    extra: int  # stored, never acknowledged (the agent died before answering)

    def __str__(self) -> str:
        return (
            f"{self.acknowledged} acknowledged, {self.lost} lost, {self.duplicates} duplicated, "
            f"{self.extra} stored but never acknowledged"
        )


def compare(database: Path, ledger: Ledger) -> Comparison:
    """Acknowledged items against the rows in `database` (opened read-only: no agent may run)."""
    with duckdb.connect(str(database), read_only=True) as connection:
        span_rows = connection.execute(
            "SELECT span_id, count(*) FROM otel_spans_raw WHERE service_name = ? GROUP BY span_id", [SERVICE]
        ).fetchall()
        route_rows = connection.execute(
            "SELECT http_route, count(*) FROM beyla_http_metrics WHERE http_route LIKE '/d/%' GROUP BY http_route"
        ).fetchall()
    stored_spans = {int(span_id): count for span_id, count in span_rows}
    stored_routes = {str(route): count for route, count in route_rows}
    lost = len(ledger.spans - stored_spans.keys()) + len(ledger.routes - stored_routes.keys())
    duplicates = sum(count - 1 for count in stored_spans.values()) + sum(count - 1 for count in stored_routes.values())
    extra = len(stored_spans.keys() - ledger.spans) + len(stored_routes.keys() - ledger.routes)
    return Comparison(ledger.items, lost, duplicates, extra)
