"""The export client against real servers on loopback: outcomes, Retry-After, RetryInfo, partial success."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from coral_ebpf.export.client import OtlpClient
from coral_ebpf.export.settings import ExportSettings, OtlpExportSettings

ANSWERS: list[tuple[int, dict[str, str], bytes]] = []


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status, headers, body = ANSWERS.pop(0)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _client(endpoint: str, protocol: str) -> OtlpClient:
    return OtlpClient(OtlpExportSettings(endpoint=endpoint, protocol=protocol, timeout=5))


def test_http_outcomes(http_server: str) -> None:
    partial_success = ExportTracePartialSuccess(rejected_spans=3)
    partial = ExportTraceServiceResponse(partial_success=partial_success).SerializeToString()
    ANSWERS[:] = [
        (503, {"Retry-After": "7"}, b"busy"),
        (400, {}, b"bad request"),
        (200, {"Content-Type": "application/x-protobuf"}, partial),
    ]
    client = _client(http_server, "http/protobuf")
    busy = client.send("traces", b"")
    assert not busy.delivered and busy.retryable and busy.retry_after == 7.0 and "HTTP 503" in busy.error
    bad = client.send("traces", b"")
    assert not bad.delivered and not bad.retryable
    ok = client.send("traces", b"")
    assert ok.delivered and ok.rejected == 3


def test_connection_refused_is_retryable() -> None:
    outcome = _client("http://127.0.0.1:1", "http/protobuf").send("metrics", b"")
    assert not outcome.delivered and outcome.retryable


def test_grpc_resource_exhausted_with_retry_info() -> None:
    def export(_request: bytes, context: grpc.ServicerContext) -> bytes:
        info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=2, nanos=500_000_000))
        detail = AnyProto()
        detail.Pack(info)
        status = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message="slow down")
        status.details.append(detail)
        context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")
        return b""

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": grpc.unary_unary_rpc_method_handler(export)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        client = _client(f"http://127.0.0.1:{port}", "grpc")
        outcome = client.send("traces", b"")
        client.close()
    finally:
        server.stop(0)
    assert not outcome.delivered and outcome.retryable and outcome.retry_after == 2.5
    assert "RESOURCE_EXHAUSTED" in outcome.error


def test_settings_take_the_otel_environment_as_defaults(tmp_path: Path) -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc%3D,tenant=t1",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem",
    }
    settings = ExportSettings.from_dict({"otlp": {}}, tmp_path, environ).otlp
    assert settings is not None
    assert (settings.endpoint, settings.protocol, settings.timeout) == ("https://collector:4318", "http/protobuf", 2.5)
    assert dict(settings.headers) == {"api-key": "abc=", "tenant": "t1"} and settings.ca_file == Path("/etc/ca.pem")
    assert settings.queue_dir == tmp_path / "export-queue" and settings.queue_full == "drop_oldest"
    configured = ExportSettings.from_dict(
        {"otlp": {"endpoint": "http://up:4317", "headers": {"tenant": "t2"}}}, tmp_path, environ
    ).otlp
    assert configured is not None and configured.endpoint == "http://up:4317" and configured.headers["tenant"] == "t2"
    assert ExportSettings.from_dict({}, tmp_path, environ).otlp is None  # no section: no export
    with pytest.raises(ValueError, match="no endpoint"):
        ExportSettings.from_dict({"otlp": {}}, tmp_path, {})


def test_temporality_and_queue_fsync_settings(tmp_path: Path) -> None:
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://up:4317"}

    def temporality(otlp: dict[str, str], preference: str | None) -> str:
        environ = (
            dict(base)
            if preference is None
            else {**base, "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": preference}
        )
        settings = ExportSettings.from_dict({"otlp": otlp}, tmp_path, environ).otlp
        assert settings is not None
        return settings.temporality

    assert temporality({}, None) == "keep"
    assert temporality({}, "Delta") == "delta" and temporality({}, "lowmemory") == "delta"
    assert temporality({}, "cumulative") == "cumulative"
    assert temporality({"temporality": "keep"}, "delta") == "keep"  # the config wins
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE 'sometimes'"):
        temporality({}, "sometimes")
    durable = ExportSettings.from_dict({"otlp": {}}, tmp_path, base).otlp
    relaxed = ExportSettings.from_dict({"otlp": {"queue_fsync": False}}, tmp_path, base).otlp
    assert durable is not None and durable.queue_fsync and relaxed is not None and not relaxed.queue_fsync
