"""The stand-in's OTLP output: fake requests to the instrumented ports, exported with the
OpenTelemetry SDK exactly as Beyla exports them (beyla-facts.md §3).

- Every RED metric is a float64 histogram, cumulative; durations in seconds, sizes in bytes. With
  `otel_metrics_export.histogram_aggregation: base2_exponential_bucket_histogram` every histogram is
  base-2 exponential (the SDK's 160 buckets, max scale 20, as Beyla's defaults), else explicit with
  Beyla's duration and size buckets.
- Names by version: http.server.request.duration (v1.4+; http.server.duration before),
  rpc.server.call.duration / rpc.system.name / rpc.response.status_code (v3.23+;
  rpc.server.duration / rpc.system / rpc.grpc.status_code before), db.client.operation.duration
  (v1.7+; sql.client.duration before).
- service.name and service.namespace are resource attributes and repeated on each data point.
- One resource per instrumented process: service.instance.id = <hostname>:<pid>,
  telemetry.sdk.name = beyla, host.name, host.id, os.type = linux.
- Only the protocols in otel_*_export.instrumentations are exported.

The protocol spoken on each port comes from the control file's `ports` ({"50051": "grpc",
"5432": "sql"}); anything else is HTTP.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

DURATION_BUCKETS = (0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
SIZE_BUCKETS = (0, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
ROUTES = ("/api/items", "/api/items/{id}", "/health", "/api/orders")
GRPC_METHODS = ("/shop.Catalog/GetItem", "/shop.Catalog/ListItems")
SQL_OPERATIONS = (("SELECT", "items"), ("INSERT", "orders"), ("UPDATE", "items"))


def _version(text: str) -> tuple[int, int, int]:
    parts = text.lstrip("v").split("-")[0].split(".")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def _duration(text: str) -> float:
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    if text.endswith("m"):
        return float(text[:-1]) * 60
    return float(text.rstrip("s"))


def _host_id() -> str:
    try:
        return Path("/etc/machine-id").read_text().strip()
    except OSError:
        return socket.gethostname()


def _signal_url(endpoint: str, signal_path: str) -> str:
    """Beyla's path rule: a YAML endpoint without a path gets the SDK's default /v1/<signal>."""
    parts = urlsplit(endpoint)
    if parts.path in ("", "/") and not endpoint.endswith("/"):
        return endpoint + signal_path
    return endpoint


class Names:
    def __init__(self, version: str) -> None:
        v = _version(version)
        self.http_server = "http.server.request.duration" if v >= (1, 4, 0) else "http.server.duration"
        self.http_request_size = "http.server.request.body.size" if v >= (1, 4, 0) else "http.server.request.size"
        self.http_response_size = "http.server.response.body.size"
        new_rpc = v >= (3, 23, 0)
        self.rpc_server = "rpc.server.call.duration" if new_rpc else "rpc.server.duration"
        self.rpc_system = "rpc.system.name" if new_rpc else "rpc.system"
        self.rpc_status = "rpc.response.status_code" if new_rpc else "rpc.grpc.status_code"
        self.db_client = "db.client.operation.duration" if v >= (1, 7, 0) else "sql.client.duration"


class _Service:
    """One instrumented process: its own resource, meter provider and tracer provider."""

    def __init__(self, target: dict[str, Any], config: dict[str, Any], version: str, control: dict[str, Any]):
        metrics_cfg = config.get("otel_metrics_export") or {}
        traces_cfg = config.get("otel_traces_export") or {}
        hostname = socket.gethostname()
        self.target = target
        self.names = Names(version)
        self.metric_protocols = set(metrics_cfg.get("instrumentations") or ["*"])
        self.trace_protocols = set(traces_cfg.get("instrumentations") or ["*"])
        self.service = str(target["service"])
        self.resource = Resource(
            {
                "service.name": self.service,
                "service.instance.id": f"{hostname}:{target['pid']}",
                "telemetry.sdk.language": control.get("language", "python"),
                "telemetry.sdk.name": "beyla",
                "telemetry.sdk.version": version.lstrip("v"),
                "telemetry.distro.name": "beyla",
                "telemetry.distro.version": version.lstrip("v"),
                "host.name": hostname,
                "host.id": _host_id(),
                "os.type": "linux",
            }
        )
        self.meters = self._meter_provider(metrics_cfg) if metrics_cfg.get("endpoint") else None
        self.tracers = self._tracer_provider(traces_cfg) if traces_cfg.get("endpoint") else None
        if self.meters is not None:
            meter = self.meters.get_meter("beyla")
            n = self.names
            self.http_duration = meter.create_histogram(n.http_server, unit="s", description="HTTP server duration")
            self.http_req_size = meter.create_histogram(n.http_request_size, unit="By")
            self.http_resp_size = meter.create_histogram(n.http_response_size, unit="By")
            self.rpc_duration = meter.create_histogram(n.rpc_server, unit="s")
            self.db_duration = meter.create_histogram(n.db_client, unit="s")
        self.tracer = self.tracers.get_tracer("beyla") if self.tracers is not None else None

    def _views(self, cfg: dict[str, Any]) -> list[View]:
        n = self.names
        durations: Any = ExplicitBucketHistogramAggregation(list(DURATION_BUCKETS))
        sizes: Any = ExplicitBucketHistogramAggregation(list(SIZE_BUCKETS))
        if cfg.get("histogram_aggregation") == "base2_exponential_bucket_histogram":
            durations = sizes = ExponentialBucketHistogramAggregation(max_size=160, max_scale=20)
        return [
            View(instrument_name=n.http_server, aggregation=durations),
            View(instrument_name=n.rpc_server, aggregation=durations),
            View(instrument_name=n.db_client, aggregation=durations),
            View(instrument_name=n.http_request_size, aggregation=sizes),
            View(instrument_name=n.http_response_size, aggregation=sizes),
        ]

    def _meter_provider(self, cfg: dict[str, Any]) -> MeterProvider:
        endpoint = str(cfg["endpoint"])
        if cfg.get("protocol") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

            exporter: Any = GrpcExporter(endpoint=endpoint, insecure=True)
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter(endpoint=_signal_url(endpoint, "/v1/metrics"))
        interval = _duration(str(cfg.get("interval", "60s")))
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval * 1000)
        return MeterProvider(resource=self.resource, metric_readers=[reader], views=self._views(cfg))

    def _tracer_provider(self, cfg: dict[str, Any]) -> TracerProvider:
        endpoint = str(cfg["endpoint"])
        if cfg.get("protocol") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

            exporter: Any = GrpcSpans(endpoint=endpoint, insecure=True)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            base = endpoint.removesuffix("/v1/traces")
            exporter = OTLPSpanExporter(endpoint=base.rstrip("/") + "/v1/traces")
        delay = _duration(str(cfg.get("batch_timeout", "15s")))
        provider = TracerProvider(resource=self.resource)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay * 1000))
        return provider

    def _wants(self, protocol: str, protocols: set[str]) -> bool:
        return "*" in protocols or protocol in protocols

    def _span(self, name: str, kind: SpanKind, times: tuple[int, int], attrs: dict[str, Any], error: bool) -> None:
        if self.tracer is None:
            return
        start_ns, end_ns = times
        span = self.tracer.start_span(name, kind=kind, start_time=start_ns, attributes=attrs)
        if error:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end_ns)

    def request(self, port: int, protocol: str, rng: random.Random) -> None:
        seconds = min(rng.lognormvariate(-4.0, 1.0), 9.0)
        end_ns = time.time_ns()
        start_ns = end_ns - int(seconds * 1e9)
        app = {"service.name": self.service}
        if protocol == "grpc":
            method = rng.choice(GRPC_METHODS)
            code = 0 if rng.random() > 0.05 else 14
            attrs: dict[str, AttributeValue] = {
                **app,
                "rpc.method": method,
                self.names.rpc_system: "grpc",
                self.names.rpc_status: code,
                "server.address": "127.0.0.1",
                "server.port": port,
            }
            if self.meters is not None and self._wants("grpc", self.metric_protocols):
                self.rpc_duration.record(seconds, attrs)
            if self._wants("grpc", self.trace_protocols):
                self._span(method, SpanKind.SERVER, (start_ns, end_ns), attrs, code != 0)
            return
        if protocol == "sql":
            operation, table = rng.choice(SQL_OPERATIONS)
            attrs = {
                **app,
                "db.operation.name": operation,
                "db.system.name": "postgresql",
                "server.address": "127.0.0.1",
            }
            if self.meters is not None and self._wants("sql", self.metric_protocols):
                self.db_duration.record(seconds, attrs)
            if self._wants("sql", self.trace_protocols):
                span_attrs = {**attrs, "db.collection.name": table, "server.port": port}
                self._span(f"{operation} {table}", SpanKind.CLIENT, (start_ns, end_ns), span_attrs, False)
            return
        route = rng.choice(ROUTES)
        roll = rng.random()
        status = 500 if roll < 0.05 else (404 if roll < 0.1 else 200)
        method = "POST" if route == "/api/orders" else "GET"
        attrs = {
            **app,
            "http.request.method": method,
            "http.response.status_code": status,
            "url.scheme": "http",
            "http.route": route,
            "server.address": "127.0.0.1",
            "server.port": port,
        }
        request_size = 0 if method == "GET" else rng.randint(40, 900)
        response_size = rng.randint(20, 6000)
        if self.meters is not None and self._wants("http", self.metric_protocols):
            self.http_duration.record(seconds, attrs)
            self.http_req_size.record(request_size, attrs)
            self.http_resp_size.record(response_size, attrs)
        if self._wants("http", self.trace_protocols):
            path = route.replace("{id}", str(rng.randint(1, 99)))
            span_attrs = {
                **attrs,
                "url.path": path,
                "client.address": "127.0.0.1",
                "http.request.body.size": request_size,
                "http.response.body.size": response_size,
            }
            self._span(f"{method} {route}", SpanKind.SERVER, (start_ns, end_ns), span_attrs, status >= 500)

    def shutdown(self) -> None:
        if self.meters is not None:
            self.meters.shutdown()
        if self.tracers is not None:
            self.tracers.shutdown()


class FakeTelemetry(threading.Thread):
    """Fake requests to every instrumented port at `request_interval` (control; default 0.2 s)."""

    def __init__(self, config: dict[str, Any], targets: list[dict[str, Any]], version: str, control: dict[str, Any]):
        super().__init__(daemon=True)
        self.services = [_Service(target, config, version, control) for target in targets]
        self.interval = float(control.get("request_interval", 0.2))
        self.protocols = {int(port): kind for port, kind in (control.get("ports") or {}).items()}
        self.stopped = threading.Event()
        self.rng = random.Random(1234)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            for service in self.services:
                for port in service.target["ports"]:
                    service.request(port, self.protocols.get(port, "http"), self.rng)

    def shutdown(self) -> None:
        self.stopped.set()
        self.join(timeout=2.0)
        for service in self.services:
            service.shutdown()
