"""Slow, idle and too many clients do not starve a normal one; every refusal says when to retry.

The normal client is a real OpenTelemetry SDK exporter sending into the real data path
(receiver -> transform -> DuckDB). Bounds on its wait are generous (the machine is shared):
the point is that it is served while hostile connections are open, not how fast.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from coral_ebpf.consumer import ConsumeResult
from coral_ebpf.otlp.receiver import OtlpReceiver
from coral_ebpf.otlp.settings import ConnectionLimits, OtlpSettings
from coral_ebpf.state import PartState
from coral_ebpf.storage.writer import Storage
from tests.helpers import beyla_payloads
from tests.helpers.consumertest import Sink
from tests.helpers.datapath import data_path
from tests.helpers.otlp_receiver import running_receiver

HOSTILE = 100


@contextlib.contextmanager
def served(tmp_path: Path, limits: ConnectionLimits) -> Iterator[tuple[Storage, OtlpReceiver, tuple[str, int]]]:
    with data_path(tmp_path) as (storage, processor):
        settings = OtlpSettings(grpc_endpoint=None, http_endpoint="127.0.0.1:0", limits=limits)
        receiver = OtlpReceiver(settings, processor)
        receiver.start()
        try:
            assert receiver.http_address is not None
            host, _, port = receiver.http_address.rpartition(":")
            yield storage, receiver, (host, int(port))
        finally:
            receiver.stop(5.0)


def normal_export(address: tuple[str, int], service: str) -> tuple[SpanExportResult, float]:
    """One span through the SDK's OTLP/HTTP exporter; its result and how long the export took."""
    exporter = OTLPSpanExporter(endpoint=f"http://{address[0]}:{address[1]}/v1/traces", timeout=60)
    results: list[tuple[SpanExportResult, float]] = []

    class Timed(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            started = time.monotonic()
            result = exporter.export(spans)  # type: ignore[arg-type]
            results.append((result, time.monotonic() - started))
            return result

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(Timed()))
    provider.get_tracer("fair").start_span("GET /fair").end()
    provider.shutdown()
    return results[0]


def stored_spans(storage: Storage, service: str) -> int:
    assert storage.flush(30.0)
    row = storage.reader().execute("SELECT count(*) FROM otel_spans_raw WHERE service_name = ?", [service]).fetchone()
    return int(row[0]) if row else 0


def closed_by_server(connection: socket.socket, within: float) -> bool:
    """True when the server closes (or resets) the connection within `within` seconds."""
    connection.settimeout(within)
    try:
        while connection.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_slow_bodies_do_not_make_a_normal_request_wait(tmp_path: Path) -> None:
    limits = ConnectionLimits(max_concurrent_calls=4, body_timeout=60.0, idle_timeout=60.0)
    with served(tmp_path, limits) as (storage, _, address):
        slow = []
        for _ in range(HOSTILE):
            connection = socket.create_connection(address, timeout=10)
            connection.sendall(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                b"Content-Length: 100000\r\n\r\n" + b"\x0a" * 10
            )
            slow.append(connection)
        try:
            result, waited = normal_export(address, "fair-body")
            assert result == SpanExportResult.SUCCESS
            assert waited < 20, waited  # was 26 s with 100 slow bodies holding the decode slots
            assert stored_spans(storage, "fair-body") == 1
        finally:
            for connection in slow:
                connection.close()


def test_slowloris_and_idle_connections_are_closed(tmp_path: Path) -> None:
    limits = ConnectionLimits(idle_timeout=1.0, header_timeout=1.0)
    with served(tmp_path, limits) as (storage, receiver, address):
        idle = [socket.create_connection(address, timeout=10) for _ in range(HOSTILE // 2)]
        loris = [socket.create_connection(address, timeout=10) for _ in range(HOSTILE // 2)]
        stop = threading.Event()

        def dribble() -> None:  # headers one byte at a time, never finished
            header = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
            for byte in header:
                for connection in loris:
                    with contextlib.suppress(OSError):
                        connection.send(bytes([byte]))
                if stop.wait(0.2):
                    return

        dribbler = threading.Thread(target=dribble, daemon=True)
        dribbler.start()
        try:
            result, _ = normal_export(address, "fair-loris")
            assert result == SpanExportResult.SUCCESS and stored_spans(storage, "fair-loris") == 1
            assert all(closed_by_server(connection, 15) for connection in idle)
            assert all(closed_by_server(connection, 15) for connection in loris)
        finally:
            stop.set()
            dribbler.join(5)
            for connection in idle + loris:
                connection.close()
        assert receiver.status()["state"] == PartState.RUNNING


def test_connections_beyond_the_cap_get_429_with_retry_after(tmp_path: Path) -> None:
    limits = ConnectionLimits(max_connections=10, idle_timeout=60.0)
    with served(tmp_path, limits) as (storage, _, address):
        held = [socket.create_connection(address, timeout=10) for _ in range(10)]
        time.sleep(0.2)  # let the server register them
        try:
            extra = socket.create_connection(address, timeout=10)
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := extra.recv(4096):
                    answer += chunk
            extra.close()
            assert answer.startswith(b"HTTP/1.1 429"), answer
            assert b"Retry-After: 1\r\n" in answer and b"otlp.max_connections" in answer
        finally:
            for connection in held:
                connection.close()
        time.sleep(0.2)
        result, _ = normal_export(address, "fair-cap")  # room again once they are gone
        assert result == SpanExportResult.SUCCESS and stored_spans(storage, "fair-cap") == 1


def _retry_delay(error: grpc.RpcError) -> float:
    trailers = dict(error.trailing_metadata() or ())
    status = Status.FromString(trailers["grpc-status-details-bin"])
    detail = RetryInfo()
    assert status.details[0].Unpack(detail)
    return float(detail.retry_delay.ToNanoseconds() / 1e9)


def test_grpc_calls_beyond_the_limit_get_retry_info() -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def busy(signal: str) -> ConsumeResult | None:
        entered.release()
        release.wait(20)
        return None

    # More admitted calls than decode workers: 2 run in the consumer, 6 wait for a worker; the
    # refusal of the 9th must not queue behind them.
    held = 8
    limits = ConnectionLimits(max_concurrent_calls=held)
    with running_receiver(Sink(busy), http_endpoint=None, limits=limits, retry_after=2.0) as (
        receiver,
        consumer,
    ):
        assert receiver.grpc_address is not None
        body = beyla_payloads.traces_request().SerializeToString()
        path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        outcomes: list[str] = []

        def call() -> None:
            with grpc.insecure_channel(receiver.grpc_address) as channel:
                channel.unary_unary(path)(body, timeout=30)
                outcomes.append("ok")

        holders = [threading.Thread(target=call) for _ in range(held)]
        for holder in holders:
            holder.start()
        assert entered.acquire(timeout=10) and entered.acquire(timeout=10)
        time.sleep(1.0)  # let the other holders reach the server and wait for a worker
        try:
            with grpc.insecure_channel(receiver.grpc_address) as channel, pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary(path)(body, timeout=10)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "otlp.max_concurrent_calls" in caught.value.details()
            assert _retry_delay(caught.value) == 2.0
        finally:
            release.set()
            for holder in holders:
                holder.join(20)
        assert outcomes == ["ok"] * held and len(consumer.traces) == held
        with grpc.insecure_channel(receiver.grpc_address) as channel:
            channel.unary_unary(path)(body, timeout=10)  # a slot is free again
        assert len(consumer.traces) == held + 1


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_a_request_over_a_cap_is_refused_quickly_and_whole(tmp_path: Path, transport: str) -> None:
    """8 MB of empty ResourceMetrics (millions of resources) took ~20 s of a worker; now a quick 413."""
    body = b"\x0a\x00" * (4 * 1024 * 1024)  # ExportMetricsServiceRequest: 4 Mi empty resource_metrics
    assert len(ExportMetricsServiceRequest.FromString(body).resource_metrics) == 4 * 1024 * 1024
    with data_path(tmp_path) as (_, processor):
        settings = OtlpSettings(grpc_endpoint="127.0.0.1:0", http_endpoint="127.0.0.1:0", max_body_bytes=16 << 20)
        receiver = OtlpReceiver(settings, processor)
        receiver.start()
        try:
            started = time.monotonic()
            if transport == "grpc":
                assert receiver.grpc_address is not None
                options = [("grpc.max_send_message_length", 64 << 20)]
                path = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
                channel = grpc.insecure_channel(receiver.grpc_address, options=options)
                with channel, pytest.raises(grpc.RpcError) as caught:
                    channel.unary_unary(path)(body, timeout=60)
                assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "otlp.max_resources_per_request" in caught.value.details()
            else:
                assert receiver.http_address is not None
                host, _, port = receiver.http_address.rpartition(":")
                connection = http.client.HTTPConnection(host, int(port), timeout=60)
                connection.request("POST", "/v1/metrics", body=body, headers={"Content-Type": "application/x-protobuf"})
                response = connection.getresponse()
                answer = response.read()
                connection.close()
                assert response.status == 413 and b"otlp.max_resources_per_request" in answer
            assert time.monotonic() - started < 15  # generous; was ~20 s of flattening
            assert processor.status().get("metric_points_received", 0) == 0  # the consumer never saw it
        finally:
            receiver.stop(5.0)
