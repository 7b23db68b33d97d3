"""OTLP/gRPC over the wire: the generated stubs, Beyla-shaped payloads, limits and status codes."""

from __future__ import annotations

import gzip
import resource
from collections.abc import Iterator

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from coral_ebpf.consumer import ConsumeResult, ConsumerUnavailableError, QueueFullError
from coral_ebpf.otlp.receiver import OtlpReceiver
from tests.helpers import beyla_payloads
from tests.helpers.bombs import gzip_bomb
from tests.helpers.consumertest import SerializedSink, Sink
from tests.helpers.otlp_receiver import running_receiver
from tests.helpers.raw_grpc import unary_call

LIMIT = 4 * 1024 * 1024
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture
def served() -> Iterator[tuple[OtlpReceiver, Sink]]:
    with running_receiver(http_endpoint=None, max_body_bytes=LIMIT) as pair:
        yield pair


def channel(receiver: OtlpReceiver, compression: grpc.Compression | None = None) -> grpc.Channel:
    assert receiver.grpc_address is not None
    options = [("grpc.max_send_message_length", 64 << 20)]
    return grpc.insecure_channel(receiver.grpc_address, options=options, compression=compression)


def raw_export(receiver: OtlpReceiver, body: bytes, compression: grpc.Compression | None = None) -> bytes:
    with channel(receiver, compression) as ch:
        return ch.unary_unary(TRACE_EXPORT)(body, timeout=30)  # type: ignore[no-any-return]


def assert_still_serving(receiver: OtlpReceiver, consumer: Sink) -> None:
    before = len(consumer.traces)
    with channel(receiver) as ch:
        trace_service_pb2_grpc.TraceServiceStub(ch).Export(beyla_payloads.traces_request(), timeout=10)
    assert len(consumer.traces) == before + 1


def test_generated_stubs_for_every_signal(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    with channel(receiver) as ch:
        response = trace_service_pb2_grpc.TraceServiceStub(ch).Export(beyla_payloads.traces_request(), timeout=10)
        assert response == trace_service_pb2.ExportTraceServiceResponse()
        metrics_service_pb2_grpc.MetricsServiceStub(ch).Export(beyla_payloads.metrics_request(), timeout=10)
        logs_request = logs_service_pb2.ExportLogsServiceRequest()
        logs_request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hello"
        logs_service_pb2_grpc.LogsServiceStub(ch).Export(logs_request, timeout=10)
    assert consumer.traces == [beyla_payloads.traces_request()]
    assert consumer.metrics == [beyla_payloads.metrics_request()]
    assert consumer.logs == [logs_request]
    signals = receiver.status()["grpc"]["signals"]
    assert [signals[s]["items_accepted"] for s in ("traces", "metrics", "logs")] == [4, 4, 1]


def test_gzip_compressed_call(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    raw_export(receiver, beyla_payloads.traces_request().SerializeToString(), grpc.Compression.Gzip)
    assert consumer.traces == [beyla_payloads.traces_request()]


def test_partial_success(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    consumer.behaviour = lambda signal: ConsumeResult(rejected=3, message="3 spans lack a service")
    response = trace_service_pb2.ExportTraceServiceResponse.FromString(
        raw_export(receiver, beyla_payloads.traces_request().SerializeToString())
    )
    assert response.partial_success.rejected_spans == 3
    assert response.partial_success.error_message == "3 spans lack a service"


def test_malformed_message_is_invalid_argument(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    with pytest.raises(grpc.RpcError) as caught:
        raw_export(receiver, b"\x0a\xff\xff\xff\xff\x0f")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf ExportTraceServiceRequest" in caught.value.details()
    assert receiver.status()["grpc"]["signals"]["traces"]["errors"] == {"INVALID_ARGUMENT": 1}
    assert_still_serving(receiver, consumer)


def test_oversized_message_is_resource_exhausted(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    with pytest.raises(grpc.RpcError) as caught:
        raw_export(receiver, bytes(LIMIT + 1))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_still_serving(receiver, consumer)


def test_gzip_message_inflating_past_limit_is_refused(served: tuple[OtlpReceiver, Sink]) -> None:
    """grpcio's client compresses LIMIT+1 bytes to a few KB: only the decompressed size is over."""
    receiver, consumer = served
    with pytest.raises(grpc.RpcError) as caught:
        raw_export(receiver, bytes(LIMIT + 1), grpc.Compression.Gzip)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in caught.value.details()
    assert_still_serving(receiver, consumer)


def test_gzip_bomb_is_refused_without_inflating(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    assert receiver.grpc_address is not None
    bomb = gzip_bomb()  # 1 GiB of zeros, ~1 MB on the wire, one gRPC message with the compressed flag
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    answer = unary_call(receiver.grpc_address, TRACE_EXPORT, bomb, gzip_compressed=True)
    peak_after_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert answer["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]), answer
    assert "larger than max" in answer.get("grpc-message", "").replace("%20", " ")
    assert (peak_after_kib - peak_before_kib) * 1024 < 64 * 1024 * 1024
    assert consumer.traces == []
    assert_still_serving(receiver, consumer)


def test_raw_frames_reach_the_receiver(served: tuple[OtlpReceiver, Sink]) -> None:
    """The h2 client used for the bomb speaks valid gRPC: a good gzip message through it is accepted."""
    receiver, consumer = served
    assert receiver.grpc_address is not None
    body = gzip.compress(beyla_payloads.traces_request().SerializeToString())
    answer = unary_call(receiver.grpc_address, TRACE_EXPORT, body, gzip_compressed=True)
    assert answer["grpc-status"] == "0"
    assert consumer.traces == [beyla_payloads.traces_request()]


def _retry_info(error: grpc.RpcError) -> tuple[float, float]:
    trailers = dict(error.trailing_metadata())
    status = Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == error.code().value[0]
    detail = RetryInfo()
    assert status.details[0].Unpack(detail)
    plain = RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    return detail.retry_delay.ToNanoseconds() / 1e9, plain.retry_delay.ToNanoseconds() / 1e9


def test_queue_full_is_resource_exhausted_with_retry_info() -> None:
    def full(signal: str) -> ConsumeResult | None:
        raise QueueFullError("write queue holds 200000 rows", retry_after=2.5)

    with running_receiver(Sink(full), http_endpoint=None, retry_after=1.0) as (receiver, _):
        with pytest.raises(grpc.RpcError) as caught:
            raw_export(receiver, beyla_payloads.traces_request().SerializeToString())
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "write queue full" in caught.value.details()
        assert _retry_info(caught.value) == (2.5, 2.5)
        traces = receiver.status()["grpc"]["signals"]["traces"]
        assert traces["errors"] == {"RESOURCE_EXHAUSTED": 1} and traces["items_refused"] == 4


def test_unavailable_with_retry_info() -> None:
    def down(signal: str) -> ConsumeResult | None:
        raise ConsumerUnavailableError("storage is stopping", retry_after=0.5)

    with running_receiver(Sink(down), http_endpoint=None, retry_after=3.0) as (receiver, _):
        with pytest.raises(grpc.RpcError) as caught:
            raw_export(receiver, beyla_payloads.traces_request().SerializeToString())
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "storage is stopping" in caught.value.details()
        assert _retry_info(caught.value) == (3.0, 3.0)


def test_unknown_method_is_unimplemented(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    with channel(receiver) as ch, pytest.raises(grpc.RpcError) as caught:
        ch.unary_unary("/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export")(b"", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert_still_serving(receiver, consumer)


def test_serialized_fast_path_gets_the_raw_body() -> None:
    consumer = SerializedSink(lambda signal: ConsumeResult(rejected=1, message="one bad span"))
    with running_receiver(consumer, http_endpoint=None) as (receiver, _):
        body = beyla_payloads.traces_request().SerializeToString()
        response = trace_service_pb2.ExportTraceServiceResponse.FromString(raw_export(receiver, body))
        assert consumer.bodies == [body]
        assert response.partial_success.rejected_spans == 1
        traces = receiver.status()["grpc"]["signals"]["traces"]
        assert (traces["items_accepted"], traces["items_rejected"]) == (3, 1)


def test_serialized_fast_path_refuses_what_the_consumer_cannot_decode() -> None:
    consumer = SerializedSink()
    with running_receiver(consumer, http_endpoint=None) as (receiver, _):
        # Outer framing is fine (one resource, one scope, one "span"), the span itself is not.
        body = b"\x0a\x06\x12\x04\x12\x02\x08\xff"
        with pytest.raises(grpc.RpcError) as caught:
            raw_export(receiver, body)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid protobuf ExportTraceServiceRequest" in caught.value.details()
        assert consumer.bodies == []
        assert_still_serving(receiver, consumer)
