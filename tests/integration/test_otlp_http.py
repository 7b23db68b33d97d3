"""OTLP/HTTP over the wire: Beyla-shaped payloads in both encodings, and every status code the spec names."""

from __future__ import annotations

import gzip
import http.client
import json
import resource
import socket
from collections.abc import Iterator

import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from coral_ebpf.consumer import ConsumeResult, ConsumerUnavailableError, QueueFullError
from coral_ebpf.otlp.receiver import OtlpReceiver
from coral_ebpf.otlp.settings import ConnectionLimits
from tests.helpers import beyla_payloads
from tests.helpers.beyla_otlp import BEYLA_DURATION_BUCKETS
from tests.helpers.bombs import gzip_bomb
from tests.helpers.consumertest import SerializedSink, Sink
from tests.helpers.otlp_receiver import running_receiver

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
LIMIT = 4 * 1024 * 1024


class Reply:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()
        self.content_type = response.headers.get("Content-Type", "")

    def status_message(self) -> str:
        """The google.rpc.Status message of an error body, in whichever encoding it came."""
        if self.content_type.startswith(PROTOBUF):
            return str(Status.FromString(self.body).message)
        if self.content_type.startswith(JSON):
            return str(json.loads(self.body)["message"])
        return self.body.decode()


def post(
    receiver: OtlpReceiver,
    path: str,
    body: bytes | Iterator[bytes],
    content_type: str | None = PROTOBUF,
    *,
    encoding: str | None = None,
    method: str = "POST",
) -> Reply:
    assert receiver.http_address is not None
    host, _, port = receiver.http_address.rpartition(":")
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=30)
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    try:
        if isinstance(body, bytes):
            connection.request(method, path, body=body, headers=headers)
        else:
            connection.request(method, path, body=body, headers=headers, encode_chunked=True)
        return Reply(connection.getresponse())
    finally:
        connection.close()


def assert_still_serving(receiver: OtlpReceiver, consumer: Sink) -> None:
    before = len(consumer.traces)
    reply = post(receiver, "/v1/traces", beyla_payloads.traces_request().SerializeToString())
    assert reply.status == 200, reply.body
    assert len(consumer.traces) == before + 1


@pytest.fixture
def served() -> Iterator[tuple[OtlpReceiver, Sink]]:
    with running_receiver(grpc_endpoint=None, max_body_bytes=LIMIT) as pair:
        yield pair


# --- good requests -------------------------------------------------------------------------


def test_beyla_protobuf_traces_arrive_intact(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    request = beyla_payloads.traces_request()
    reply = post(receiver, "/v1/traces", request.SerializeToString())
    assert reply.status == 200 and reply.content_type.startswith(PROTOBUF)
    assert ExportTraceServiceResponse.FromString(reply.body) == ExportTraceServiceResponse()
    assert consumer.traces == [request]
    assert receiver.status()["http"]["signals"]["traces"]["items_accepted"] == 4


def test_beyla_protobuf_metrics_arrive_intact(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    request = beyla_payloads.metrics_request()
    reply = post(receiver, "/v1/metrics", request.SerializeToString())
    assert reply.status == 200
    assert consumer.metrics == [request]
    metric = consumer.metrics[0].resource_metrics[0].scope_metrics[0].metrics[0]
    assert metric.name == "http.server.request.duration" and metric.unit == "s"
    assert list(metric.histogram.data_points[0].explicit_bounds) == list(BEYLA_DURATION_BUCKETS)
    assert receiver.status()["http"]["signals"]["metrics"]["items_accepted"] == 4


def test_beyla_json_traces_hex_ids_and_integer_enums(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    reply = post(receiver, "/v1/traces", beyla_payloads.traces_json(), "application/json; charset=utf-8")
    assert reply.status == 200 and reply.content_type.startswith(JSON)
    assert json.loads(reply.body) == {}
    server, sql = consumer.spans()
    assert server.trace_id == bytes.fromhex("5b8efff798038103d269b633813fc60c")
    assert server.span_id == bytes.fromhex("eee19b7ec3c1b174")
    assert server.parent_span_id == b""
    assert sql.parent_span_id == server.span_id
    assert sql.links[0].trace_id == bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
    assert (server.kind, sql.kind) == (2, 3)
    assert sql.status.code == 2 and sql.status.message == "connection reset"
    assert server.start_time_unix_nano == 1_790_000_000_000_000_000
    attributes = {kv.key: kv.value for kv in server.attributes}
    assert attributes["http.response.status_code"].int_value == 200
    resource_attrs = {kv.key: kv.value for kv in consumer.traces[0].resource_spans[0].resource.attributes}
    assert resource_attrs["process.pid"].int_value == beyla_payloads.PID


def test_beyla_json_metrics_with_exemplar_ids(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    reply = post(receiver, "/v1/metrics", beyla_payloads.metrics_json(), JSON)
    assert reply.status == 200, reply.body
    point = consumer.metrics[0].resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0]
    assert point.count == 100 and list(point.bucket_counts)[:4] == [0, 10, 20, 30]
    assert point.exemplars[0].span_id == bytes.fromhex("eee19b7ec3c1b174")
    assert consumer.metrics[0].resource_metrics[0].scope_metrics[0].metrics[0].histogram.aggregation_temporality == 2


def test_gzip_and_multi_member_gzip(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    payload = beyla_payloads.traces_request().SerializeToString()
    assert post(receiver, "/v1/traces", gzip.compress(payload), encoding="gzip").status == 200
    half = len(payload) // 2
    two_members = gzip.compress(payload[:half]) + gzip.compress(payload[half:])
    assert post(receiver, "/v1/traces", two_members, encoding="gzip").status == 200
    assert consumer.traces[0] == consumer.traces[1]
    assert post(receiver, "/v1/traces", payload, encoding="identity").status == 200


def test_chunked_body_within_limit(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    payload = beyla_payloads.traces_request().SerializeToString()
    reply = post(receiver, "/v1/traces", iter([payload[:100], payload[100:]]))
    assert reply.status == 200
    assert consumer.traces == [beyla_payloads.traces_request()]


def test_empty_protobuf_body_is_an_empty_request(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    assert post(receiver, "/v1/logs", b"").status == 200
    assert len(consumer.logs) == 1


# --- partial success -----------------------------------------------------------------------


def test_partial_success_in_both_encodings() -> None:
    consumer = Sink(lambda signal: ConsumeResult(rejected=1, message="span without service.name"))
    with running_receiver(consumer, grpc_endpoint=None) as (receiver, _):
        reply = post(receiver, "/v1/traces", beyla_payloads.traces_request().SerializeToString())
        assert reply.status == 200
        partial = ExportTraceServiceResponse.FromString(reply.body).partial_success
        assert (partial.rejected_spans, partial.error_message) == (1, "span without service.name")

        reply = post(receiver, "/v1/traces", beyla_payloads.traces_json(), JSON)
        assert json.loads(reply.body) == {
            "partialSuccess": {"rejectedSpans": "1", "errorMessage": "span without service.name"}
        }
        traces = receiver.status()["http"]["signals"]["traces"]
        assert (traces["items_accepted"], traces["items_rejected"]) == (3 + 1, 2)


def test_partial_success_without_message_gets_one() -> None:
    consumer = Sink(lambda signal: ConsumeResult(rejected=2))
    with running_receiver(consumer, grpc_endpoint=None) as (receiver, _):
        reply = post(receiver, "/v1/metrics", beyla_payloads.metrics_request().SerializeToString())
        partial = ExportMetricsServiceResponse.FromString(reply.body).partial_success
        assert partial.rejected_data_points == 2
        assert partial.error_message == "2 of 4 data_points rejected"


# --- refused requests ----------------------------------------------------------------------


def test_malformed_protobuf_is_400(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    reply = post(receiver, "/v1/traces", b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert reply.status == 400 and reply.content_type.startswith(PROTOBUF)
    assert "not a valid protobuf ExportTraceServiceRequest" in reply.status_message()
    assert consumer.traces == []
    assert_still_serving(receiver, consumer)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"resourceSpans": 7}', "not a valid OTLP/JSON"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "AAECAwQFBgcICQoLDA0ODw=="}]}]}]}',
            "resourceSpans[0].scopeSpans[0].spans[0].traceId",
        ),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "zz00000000000000"}]}]}]}', "not hex"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "SPAN_KIND_NOPE"}]}]}]}', None),
        (b"\xff\xfe{}", "not valid JSON"),
    ],
)
def test_malformed_json_is_400(served: tuple[OtlpReceiver, Sink], body: bytes, expected: str | None) -> None:
    receiver, consumer = served
    reply = post(receiver, "/v1/traces", body, JSON)
    if expected is None:
        # An unknown enum name is ignored like an unknown field (OTLP/JSON receivers must ignore unknown fields).
        assert reply.status == 200
    else:
        assert reply.status == 400 and reply.content_type.startswith(JSON)
        assert expected in reply.status_message()
    assert_still_serving(receiver, consumer)


def test_unknown_json_fields_are_ignored(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    document = json.loads(beyla_payloads.traces_json())
    document["futureField"] = {"x": 1}
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["newSpanField"] = "v"
    assert post(receiver, "/v1/traces", json.dumps(document).encode(), JSON).status == 200
    assert len(consumer.spans()) == 2


@pytest.mark.parametrize("content_type", ["text/plain", "application/protobuf", None])
def test_unknown_content_type_is_415(served: tuple[OtlpReceiver, Sink], content_type: str | None) -> None:
    receiver, consumer = served
    reply = post(receiver, "/v1/traces", b"{}", content_type)
    assert reply.status == 415
    assert "application/x-protobuf or application/json" in reply.body.decode()
    assert_still_serving(receiver, consumer)


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, gzip"])
def test_unknown_content_encoding_is_415(served: tuple[OtlpReceiver, Sink], encoding: str) -> None:
    receiver, consumer = served
    reply = post(receiver, "/v1/traces", b"\x00", encoding=encoding)
    assert reply.status == 415
    assert "unsupported Content-Encoding" in reply.status_message()
    assert reply.headers["Accept-Encoding"] == "gzip, deflate, identity"
    assert_still_serving(receiver, consumer)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not gzip at all", "not valid gzip"),
        (gzip.compress(b"x" * 1000)[:-30], "truncated"),
    ],
    ids=["garbage", "truncated"],
)
def test_bad_gzip_is_400(served: tuple[OtlpReceiver, Sink], body: bytes, expected: str) -> None:
    receiver, consumer = served
    reply = post(receiver, "/v1/traces", body, encoding="gzip")
    assert reply.status == 400
    assert expected in reply.status_message()
    assert_still_serving(receiver, consumer)


def test_oversized_content_length_is_413_without_reading(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    reply = post(receiver, "/v1/traces", bytes(LIMIT + 1))
    assert reply.status == 413
    assert f"Content-Length {LIMIT + 1} is over the limit of {LIMIT} bytes" in reply.status_message()
    assert_still_serving(receiver, consumer)


def test_oversized_chunked_body_is_413(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    chunk = bytes(256 * 1024)
    reply = post(receiver, "/v1/traces", iter([chunk] * (4 * LIMIT // len(chunk))))
    assert reply.status == 413
    assert "over the limit" in reply.status_message()
    assert_still_serving(receiver, consumer)


def test_gzip_bomb_is_413_and_never_inflated(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    bomb = gzip_bomb()  # 1 GiB of zeros in ~1 MB: passes the compressed-size check
    assert len(bomb) < LIMIT
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reply = post(receiver, "/v1/traces", bomb, encoding="gzip")
    peak_after_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert reply.status == 413
    assert "inflates past the limit" in reply.status_message()
    # Inflating it whole would raise the peak by 1 GiB; bounded inflation costs about LIMIT.
    assert (peak_after_kib - peak_before_kib) * 1024 < 64 * 1024 * 1024
    assert_still_serving(receiver, consumer)


def test_decompressed_size_limit_applies_to_a_modest_body(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    reply = post(receiver, "/v1/traces", gzip.compress(bytes(LIMIT + 1)), encoding="gzip")
    assert reply.status == 413
    assert post(receiver, "/v1/traces", gzip.compress(bytes(LIMIT)), encoding="gzip").status == 400  # zeros: bad tag
    assert_still_serving(receiver, consumer)


def test_queue_full_is_429_with_retry_after() -> None:
    def full(signal: str) -> ConsumeResult | None:
        raise QueueFullError("write queue holds 200000 rows", retry_after=2.5)

    with running_receiver(Sink(full), grpc_endpoint=None, retry_after=1.0) as (receiver, _):
        reply = post(receiver, "/v1/traces", beyla_payloads.traces_request().SerializeToString())
        assert reply.status == 429
        assert reply.headers["Retry-After"] == "3"  # the pipeline's 2.5 s, rounded up to whole seconds
        assert "write queue full" in reply.status_message()
        reply = post(receiver, "/v1/traces", beyla_payloads.traces_json(), JSON)
        assert reply.status == 429 and "write queue full" in reply.status_message()
        traces = receiver.status()["http"]["signals"]["traces"]
        assert traces["errors"] == {"429": 2} and traces["items_refused"] == 6 and traces["items_accepted"] == 0


def test_unavailable_is_503_with_retry_after_floor() -> None:
    def down(signal: str) -> ConsumeResult | None:
        raise ConsumerUnavailableError("storage is stopping", retry_after=0.1)

    with running_receiver(Sink(down), grpc_endpoint=None, retry_after=7.0) as (receiver, _):
        reply = post(receiver, "/v1/metrics", beyla_payloads.metrics_request().SerializeToString())
        assert reply.status == 503
        assert reply.headers["Retry-After"] == "7"  # otlp.retry_after is the floor
        assert "storage is stopping" in reply.status_message()


def test_unexpected_consumer_error_is_retryable_503() -> None:
    def broken(signal: str) -> ConsumeResult | None:
        raise KeyError("bug")

    with running_receiver(Sink(broken), grpc_endpoint=None) as (receiver, _):
        reply = post(receiver, "/v1/traces", beyla_payloads.traces_request().SerializeToString())
        assert reply.status == 503 and "Retry-After" in reply.headers
        assert "internal error in the pipeline (KeyError)" in reply.status_message()


def test_wrong_path_is_404_and_wrong_method_405(served: tuple[OtlpReceiver, Sink]) -> None:
    receiver, consumer = served
    reply = post(receiver, "/", b"{}", JSON)  # Beyla with a trailing-slash endpoint posts here
    assert reply.status == 404 and "/v1/traces, /v1/metrics, /v1/logs" in reply.body.decode()
    assert post(receiver, "/v1/trace", b"{}", JSON).status == 404
    reply = post(receiver, "/v1/traces", b"", None, method="GET")
    assert reply.status == 405 and reply.headers["Allow"] == "POST"
    assert post(receiver, "/v1/metrics", b"", None, method="PUT").status == 405
    assert receiver.status()["http"]["signals"]["other"]["errors"] == {"404": 2, "405": 2}
    assert_still_serving(receiver, consumer)


def test_stalled_body_is_408() -> None:
    limits = ConnectionLimits(body_timeout=0.5, max_concurrent_calls=1)
    with running_receiver(grpc_endpoint=None, limits=limits) as (receiver, consumer):
        assert receiver.http_address is not None
        host, _, port = receiver.http_address.rpartition(":")
        stalled = socket.create_connection((host, int(port)), timeout=10)
        stalled.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 1000\r\n\r\n" + b"\x0a" * 10
        )
        answer = stalled.recv(4096)
        stalled.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"did not arrive within 0.5s" in answer
        assert_still_serving(receiver, consumer)


def test_serialized_fast_path_for_protobuf_only() -> None:
    consumer = SerializedSink()
    with running_receiver(consumer, grpc_endpoint=None) as (receiver, _):
        body = beyla_payloads.traces_request().SerializeToString()
        assert post(receiver, "/v1/traces", gzip.compress(body), encoding="gzip").status == 200
        assert consumer.bodies == [body]  # decompressed, not decoded
        assert post(receiver, "/v1/traces", beyla_payloads.traces_json(), JSON).status == 200
        assert len(consumer.bodies) == 1 and len(consumer.traces) == 2  # JSON went the decoded way
        assert receiver.status()["http"]["signals"]["traces"]["items_accepted"] == 6
