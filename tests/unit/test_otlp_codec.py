"""Decoding, bounded decompression and the error mapping, without sockets."""

from __future__ import annotations

import gzip
import json
import zlib

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from coral_ebpf.consumer import ConsumerUnavailableError, QueueFullError
from coral_ebpf.otlp.compression import decompress, normalise_encoding
from coral_ebpf.otlp.encoding import Encoding, count_spans_serialized, decode, encode, encoding_for_content_type
from coral_ebpf.otlp.errors import (
    BodyTooLargeError,
    MalformedRequestError,
    UnsupportedMediaTypeError,
    reply_for,
)
from coral_ebpf.otlp.signals import LOGS, METRICS, TRACES
from tests.helpers import beyla_payloads

# --- content types and encodings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/x-protobuf", Encoding.PROTOBUF),
        ("Application/X-Protobuf", Encoding.PROTOBUF),
        ("application/json", Encoding.JSON),
        ("application/json; charset=utf-8", Encoding.JSON),
    ],
)
def test_content_types(header: str, expected: Encoding) -> None:
    assert encoding_for_content_type(header) is expected


@pytest.mark.parametrize("header", [None, "", "text/plain", "application/grpc", "application/jsonx"])
def test_unknown_content_types(header: str | None) -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="send application/x-protobuf or application/json"):
        encoding_for_content_type(header)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "identity"),
        ("", "identity"),
        ("identity", "identity"),
        ("GZIP", "gzip"),
        ("x-gzip", "gzip"),
        ("deflate", "deflate"),
    ],
)
def test_content_encodings(header: str | None, expected: str) -> None:
    assert normalise_encoding(header) == expected


@pytest.mark.parametrize("header", ["br", "zstd", "gzip, identity", "snappy"])
def test_unknown_content_encodings(header: str) -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="gzip, deflate, identity"):
        normalise_encoding(header)


# --- bounded decompression ---------------------------------------------------------------


def test_gzip_round_trip_at_the_limit() -> None:
    data = bytes(range(256)) * 64
    assert decompress(gzip.compress(data), "gzip", len(data)) == data


def test_gzip_over_the_limit_stops_early() -> None:
    with pytest.raises(BodyTooLargeError, match="inflates past the limit of 1000 bytes"):
        decompress(gzip.compress(bytes(1001)), "gzip", 1000)


def test_deflate_zlib_and_raw() -> None:
    data = b"otlp" * 100
    assert decompress(zlib.compress(data), "deflate", 1000) == data
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    assert decompress(raw.compress(data) + raw.flush(), "deflate", 1000) == data


def test_multi_member_gzip_and_trailing_zero_padding() -> None:
    assert decompress(gzip.compress(b"ab") + gzip.compress(b"cd") + b"\0" * 8, "gzip", 100) == b"abcd"


def test_multi_member_gzip_counts_against_one_limit() -> None:
    member = gzip.compress(bytes(600))
    with pytest.raises(BodyTooLargeError):
        decompress(member + member, "gzip", 1000)


@pytest.mark.parametrize(
    ("body", "encoding", "message"),
    [
        (b"nope", "gzip", "not valid gzip data"),
        (gzip.compress(b"x" * 100)[:-12], "gzip", "truncated"),
        (gzip.compress(b"ab") + b"junk-that-is-not-gzip", "gzip", "not valid gzip data"),
        (zlib.compress(b"ab") + b"tail", "deflate", "trailing garbage"),
        (b"", "gzip", "truncated"),
    ],
)
def test_bad_compressed_bodies(body: bytes, encoding: str, message: str) -> None:
    with pytest.raises(MalformedRequestError, match=message):
        decompress(body, encoding, 10_000)


# --- protobuf and OTLP/JSON --------------------------------------------------------------


def test_protobuf_round_trip() -> None:
    request = beyla_payloads.traces_request()
    assert decode(request.SerializeToString(), ExportTraceServiceRequest, Encoding.PROTOBUF) == request


def test_json_matches_protobuf_for_the_same_data() -> None:
    decoded = decode(beyla_payloads.traces_json(), ExportTraceServiceRequest, Encoding.JSON)
    span = decoded.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert span.span_id.hex() == "eee19b7ec3c1b174"  # sent upper case
    assert span.kind == 2


def test_json_enum_names_and_snake_case_are_accepted() -> None:
    document = {"resource_spans": [{"scopeSpans": [{"spans": [{"kind": "SPAN_KIND_CLIENT", "name": "x"}]}]}]}
    decoded = decode(json.dumps(document).encode(), ExportTraceServiceRequest, Encoding.JSON)
    assert decoded.resource_spans[0].scope_spans[0].spans[0].kind == 3


def test_json_int64_as_string_or_number() -> None:
    document = {
        "resourceSpans": [
            {"scopeSpans": [{"spans": [{"startTimeUnixNano": "1790000000000000001", "endTimeUnixNano": 5}]}]}
        ]
    }
    span = decode(json.dumps(document).encode(), ExportTraceServiceRequest, Encoding.JSON).resource_spans[0]
    assert span.scope_spans[0].spans[0].start_time_unix_nano == 1_790_000_000_000_000_001


@pytest.mark.parametrize(
    ("span", "message"),
    [
        ({"traceId": "abc"}, "must be 32 hex digits"),
        ({"spanId": "0123456789abcdeg"}, "not hex"),
        ({"parentSpanId": "AAECAwQFBgc="}, "must be 16 hex digits"),
        ({"startTimeUnixNano": "soon"}, "not a valid OTLP/JSON"),
        ({"kind": [1]}, "not a valid OTLP/JSON"),
    ],
)
def test_bad_json_fields(span: dict[str, object], message: str) -> None:
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    with pytest.raises(MalformedRequestError, match=message):
        decode(json.dumps(document).encode(), ExportTraceServiceRequest, Encoding.JSON)


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    nested = (
        '{"resourceSpans": [{"resource": {"attributes": [{"key": "k", "value": '
        + ('{"kvlistValue": {"values": [{"key": "k", "value": ' * 200)
        + "{}"
        + "}]}}" * 200
        + "}]}}]}"
    )
    with pytest.raises(MalformedRequestError):
        decode(nested.encode(), ExportTraceServiceRequest, Encoding.JSON)


def test_json_response_uses_lower_camel_case_and_int64_strings() -> None:
    response = TRACES.response(2, "two spans without a name")
    assert json.loads(encode(response, Encoding.JSON)) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "two spans without a name"}
    }
    assert encode(TRACES.response(0, ""), Encoding.JSON) == b"{}"
    assert encode(TRACES.response(0, ""), Encoding.PROTOBUF) == b""


# --- signal handlers ---------------------------------------------------------------------


def test_item_counts() -> None:
    assert TRACES.count_items(beyla_payloads.traces_request()) == 4
    assert METRICS.count_items(beyla_payloads.metrics_request()) == 4
    assert METRICS.count_items(ExportMetricsServiceRequest()) == 0
    assert LOGS.http_path == "/v1/logs"
    assert TRACES.grpc_service == "opentelemetry.proto.collector.trace.v1.TraceService"


# --- the error mapping -------------------------------------------------------------------


def test_error_mapping() -> None:
    assert reply_for(MalformedRequestError("x"), 1.0).http_status == 400
    assert reply_for(MalformedRequestError("x"), 1.0).grpc_code is grpc.StatusCode.INVALID_ARGUMENT
    too_large = reply_for(BodyTooLargeError("x"), 1.0)
    assert (too_large.http_status, too_large.grpc_code, too_large.retry_after) == (
        413,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        None,
    )
    assert reply_for(UnsupportedMediaTypeError("x"), 1.0).http_status == 415
    full = reply_for(QueueFullError("full", retry_after=0.2), 1.0)
    assert (full.http_status, full.grpc_code, full.retry_after, full.retry_after_header) == (
        429,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        1.0,
        "1",
    )
    down = reply_for(ConsumerUnavailableError("down", retry_after=4.2), 1.0)
    assert (down.http_status, down.grpc_code, down.retry_after_header) == (503, grpc.StatusCode.UNAVAILABLE, "5")
    bug = reply_for(ZeroDivisionError(), 2.0)
    assert (bug.http_status, bug.grpc_code, bug.retry_after) == (503, grpc.StatusCode.UNAVAILABLE, 2.0)


def test_retry_info_only_when_retryable() -> None:
    assert reply_for(MalformedRequestError("x"), 1.0).grpc_trailing_metadata() == ()
    keys = [key for key, _ in reply_for(QueueFullError("full", 3.0), 1.0).grpc_trailing_metadata()]
    assert keys == ["grpc-status-details-bin", "google.rpc.retryinfo-bin"]


def test_count_spans_without_decoding_them() -> None:
    assert count_spans_serialized(beyla_payloads.traces_request().SerializeToString()) == 4
    assert count_spans_serialized(b"") == 0
    # Spans are not decoded: a bad span is the consumer's to refuse, the framing is checked here.
    assert count_spans_serialized(b"\x0a\x06\x12\x04\x12\x02\x08\xff") == 1
    with pytest.raises(MalformedRequestError, match="wire format is corrupt"):
        count_spans_serialized(b"\x0a\xff\xff")
