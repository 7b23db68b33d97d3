"""A minimal OTLP/HTTP (protobuf) endpoint that keeps what it receives, for checking what the stand-in sends.

It is not the agent's receiver (coral_ebpf.otlp): it decodes the standard collector requests with
opentelemetry-proto and stores them, nothing more, so tests of the stand-in do not depend on it.
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class OtlpSink:
    def __init__(self) -> None:
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.traces: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        self.received = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                response: Any
                if self.path == "/v1/metrics":
                    request: Any = ExportMetricsServiceRequest.FromString(body)
                    response = ExportMetricsServiceResponse()
                elif self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    response = ExportTraceServiceResponse()
                else:
                    self.send_error(404)
                    return
                with sink.received:
                    sink.paths.append(self.path)
                    (sink.metrics if self.path == "/v1/metrics" else sink.traces).append(request)
                    sink.received.notify_all()
                payload = response.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OtlpSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        with self.received:
            return bool(self.received.wait_for(lambda: predicate(self), timeout=timeout))

    def metric_names(self) -> set[str]:
        with self.received:
            return {
                metric.name
                for request in self.metrics
                for resource in request.resource_metrics
                for scope in resource.scope_metrics
                for metric in scope.metrics
            }

    def span_names(self) -> set[str]:
        with self.received:
            return {
                span.name
                for request in self.traces
                for resource in request.resource_spans
                for scope in resource.scope_spans
                for span in scope.spans
            }
