"""One OTLP export request to the upstream, over gRPC or HTTP/protobuf, and what its answer means.

The outcome follows the OTLP specification's retry rules: gRPC UNAVAILABLE, RESOURCE_EXHAUSTED,
DEADLINE_EXCEEDED, ABORTED, CANCELLED, OUT_OF_RANGE and DATA_LOSS, HTTP 429/502/503/504 and
connection failures are retried (after the server's RetryInfo / Retry-After when it gives one);
anything else is a permanent refusal of that request. A partial success counts its rejected items.
"""

from __future__ import annotations

import gzip
import http.client
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from coral_ebpf.export.settings import OtlpExportSettings

_GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
_RESPONSES = {
    "traces": (ExportTraceServiceResponse, "rejected_spans"),
    "metrics": (ExportMetricsServiceResponse, "rejected_data_points"),
    "logs": (ExportLogsServiceResponse, "rejected_log_records"),
}
_RETRYABLE_GRPC = {
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_RETRYABLE_HTTP = {429, 502, 503, 504}


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    retryable: bool = False
    retry_after: float | None = None  # what the server asked for, if it did
    rejected: int = 0  # items the server refused in a partial success
    error: str = ""


def _partial(signal: str, body: bytes) -> int:
    response_type, field = _RESPONSES[signal]
    response = response_type()
    try:
        response.ParseFromString(body)
    except DecodeError:
        return 0
    return int(getattr(response.partial_success, field))


def _retry_info(error: grpc.RpcError) -> float | None:
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


class OtlpClient:
    def __init__(self, settings: OtlpExportSettings) -> None:
        self.settings = settings
        self._channel: grpc.Channel | None = None
        self._calls: dict[str, grpc.UnaryUnaryMultiCallable] = {}
        self._url = urllib.parse.urlsplit(
            settings.endpoint if "://" in settings.endpoint else f"http://{settings.endpoint}"
        )

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def send(self, signal: str, body: bytes) -> Outcome:
        try:
            if self.settings.protocol == "grpc":
                return self._send_grpc(signal, body)
            return self._send_http(signal, body)
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            return Outcome(False, retryable=True, error=f"{type(exc).__name__}: {exc}")

    # -- gRPC ------------------------------------------------------------------------------

    def _call(self, signal: str) -> grpc.UnaryUnaryMultiCallable:
        if self._channel is None:
            target = self._url.netloc
            gzipped = self.settings.compression == "gzip"
            compression = grpc.Compression.Gzip if gzipped else grpc.Compression.NoCompression
            if self.settings.plaintext:
                self._channel = grpc.insecure_channel(target, compression=compression)
            else:
                credentials = grpc.ssl_channel_credentials(
                    _read(self.settings.ca_file), _read(self.settings.key_file), _read(self.settings.cert_file)
                )
                self._channel = grpc.secure_channel(target, credentials, compression=compression)
        call = self._calls.get(signal)
        if call is None:
            call = self._calls[signal] = self._channel.unary_unary(_GRPC_METHODS[signal])
        return call

    def _send_grpc(self, signal: str, body: bytes) -> Outcome:
        try:
            metadata = tuple((key.lower(), value) for key, value in self.settings.headers.items())
            response = self._call(signal)(body, timeout=self.settings.timeout, metadata=metadata)
        except grpc.RpcError as error:
            code = error.code()
            message = f"gRPC {code.name}: {error.details()}"
            return Outcome(False, retryable=code in _RETRYABLE_GRPC, retry_after=_retry_info(error), error=message)
        return Outcome(True, rejected=_partial(signal, response))

    # -- HTTP ------------------------------------------------------------------------------

    def _send_http(self, signal: str, body: bytes) -> Outcome:
        url = self._url
        path = url.path.rstrip("/") + f"/v1/{signal}"
        headers = {"Content-Type": "application/x-protobuf", **self.settings.headers}
        if self.settings.compression == "gzip":
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        connection: http.client.HTTPConnection
        if url.scheme == "https" and not self.settings.insecure:
            context = ssl.create_default_context(cafile=str(self.settings.ca_file) if self.settings.ca_file else None)
            if self.settings.cert_file is not None:
                context.load_cert_chain(self.settings.cert_file, self.settings.key_file)
            connection = http.client.HTTPSConnection(url.netloc, timeout=self.settings.timeout, context=context)
        else:
            connection = http.client.HTTPConnection(url.netloc, timeout=self.settings.timeout)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
        finally:
            connection.close()
        if 200 <= response.status < 300:
            return Outcome(True, rejected=_partial(signal, answer))
        retry_after = response.getheader("Retry-After")
        delay = float(retry_after) if retry_after and retry_after.strip().isdigit() else None
        return Outcome(
            False,
            retryable=response.status in _RETRYABLE_HTTP,
            retry_after=delay,
            error=f"HTTP {response.status}: {answer[:200].decode(errors='replace')}",
        )
