"""Property tests: malformed payloads at both endpoints get a 4xx / gRPC error code, never a 5xx, hang or crash."""

from __future__ import annotations

import gzip
import http.client
import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from coral_ebpf.otlp.receiver import OtlpReceiver
from coral_ebpf.otlp.settings import OtlpSettings
from tests.helpers import beyla_payloads
from tests.helpers.consumertest import Sink
from tests.helpers.datapath import data_path
from tests.helpers.otlp_receiver import running_receiver

LIMIT = 256 * 1024
PATHS = ("/v1/traces", "/v1/metrics", "/v1/logs")
GRPC_METHODS = (
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
)
HTTP_ALLOWED = {200, 400, 413, 415}
GRPC_ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID_PROTOBUF = (
    beyla_payloads.traces_request().SerializeToString(),
    beyla_payloads.metrics_request().SerializeToString(),
)
VALID_JSON = (beyla_payloads.traces_json(), beyla_payloads.metrics_json())


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with running_receiver(Sink(), max_body_bytes=LIMIT) as (served, _):
        yield served


@pytest.fixture(scope="module")
def pipeline_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtlpReceiver]:
    """The receiver in front of the real transform and storage, which take protobuf traces undecoded."""
    with data_path(tmp_path_factory.mktemp("fuzz-db")) as (_, processor):
        settings = OtlpSettings(grpc_endpoint="127.0.0.1:0", http_endpoint="127.0.0.1:0", max_body_bytes=LIMIT)
        served = OtlpReceiver(settings, processor)
        served.start()
        try:
            yield served
        finally:
            served.stop(5.0)


def _truncated(payloads: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    return st.tuples(st.sampled_from(payloads), st.integers(min_value=0, max_value=4000)).map(
        lambda pair: pair[0][: pair[1]]
    )


def _flipped(payloads: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    """A valid message with a few bytes overwritten."""

    def flip(data: tuple[bytes, list[tuple[int, int]]]) -> bytes:
        payload, edits = bytearray(data[0]), data[1]
        for position, value in edits:
            payload[position % len(payload)] = value
        return bytes(payload)

    edits = st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=8)
    return st.tuples(st.sampled_from(payloads), edits).map(flip)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)
OTLP_KEYS = st.sampled_from(
    [
        "resourceSpans",
        "scopeSpans",
        "spans",
        "traceId",
        "spanId",
        "kind",
        "attributes",
        "resourceMetrics",
        "scopeMetrics",
        "metrics",
        "histogram",
        "dataPoints",
        "bucketCounts",
        "resourceLogs",
        "logRecords",
        "value",
    ]
)


def _mutated_json(data: tuple[bytes, list[str], Any]) -> bytes:
    """Replace one value somewhere in a valid OTLP/JSON document by random JSON."""
    document, path, value = json.loads(data[0]), data[1], data[2]
    node = document
    for key in path:
        if isinstance(node, dict) and key in node and isinstance(node[key], dict | list):
            node = node[key]
        elif isinstance(node, list) and node and isinstance(node[0], dict | list):
            node = node[0]
    if isinstance(node, dict):
        node[path[-1] if path else "resourceSpans"] = value
    elif isinstance(node, list):
        node.append(value)
    return json.dumps(document).encode()


PROTOBUF_BODIES = st.one_of(st.binary(max_size=2048), _truncated(VALID_PROTOBUF), _flipped(VALID_PROTOBUF))
JSON_BODIES = st.one_of(
    st.binary(max_size=512),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(OTLP_KEYS, JSON_VALUES, max_size=3).map(lambda value: json.dumps(value).encode()),
    _truncated(VALID_JSON),
    st.tuples(st.sampled_from(VALID_JSON), st.lists(OTLP_KEYS, min_size=1, max_size=6), JSON_VALUES).map(_mutated_json),
)
GZIP_BODIES = st.one_of(
    st.binary(max_size=1024).map(gzip.compress),
    st.binary(max_size=1024).map(lambda data: b"\x1f\x8b\x08\x00" + data),  # a gzip header, then garbage
    st.tuples(PROTOBUF_BODIES, st.integers(min_value=0, max_value=600)).map(
        lambda pair: gzip.compress(pair[0])[: pair[1]]
    ),
    st.integers(min_value=LIMIT - 16, max_value=LIMIT + 16).map(lambda n: gzip.compress(bytes(n))),
)


def _post(receiver: OtlpReceiver, path: str, body: bytes, headers: dict[str, str]) -> int:
    assert receiver.http_address is not None
    host, _, port = receiver.http_address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=20)  # a hang fails the test
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _grpc_code(
    receiver: OtlpReceiver, method: str, body: bytes, compression: grpc.Compression | None
) -> grpc.StatusCode:
    assert receiver.grpc_address is not None
    with grpc.insecure_channel(receiver.grpc_address, compression=compression) as channel:
        try:
            channel.unary_unary(method)(body, timeout=20)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def _still_serves(receiver: OtlpReceiver) -> None:
    body = beyla_payloads.traces_request().SerializeToString()
    assert _post(receiver, "/v1/traces", body, {"Content-Type": "application/x-protobuf"}) == 200
    assert receiver.grpc_address is not None
    with grpc.insecure_channel(receiver.grpc_address) as channel:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(beyla_payloads.traces_request(), timeout=10)


@FUZZ
@given(path=st.sampled_from(PATHS), body=PROTOBUF_BODIES)
def test_http_protobuf_fuzz(receiver: OtlpReceiver, path: str, body: bytes) -> None:
    assert _post(receiver, path, body, {"Content-Type": "application/x-protobuf"}) in HTTP_ALLOWED


@FUZZ
@given(path=st.sampled_from(PATHS), body=JSON_BODIES)
def test_http_json_fuzz(receiver: OtlpReceiver, path: str, body: bytes) -> None:
    assert _post(receiver, path, body, {"Content-Type": "application/json"}) in HTTP_ALLOWED


@FUZZ
@given(
    path=st.sampled_from(PATHS),
    body=GZIP_BODIES,
    content_type=st.sampled_from(["application/x-protobuf", "application/json"]),
    encoding=st.sampled_from(["gzip", "deflate", "x-gzip"]),
)
def test_http_compressed_fuzz(receiver: OtlpReceiver, path: str, body: bytes, content_type: str, encoding: str) -> None:
    headers = {"Content-Type": content_type, "Content-Encoding": encoding}
    assert _post(receiver, path, body, headers) in HTTP_ALLOWED


@FUZZ
@given(
    path=st.text(max_size=30).map(
        lambda text: "/" + "".join(c for c in text if (c.isascii() and c.isalnum()) or c in "/._-")
    ),
    headers=st.dictionaries(
        st.sampled_from(["Content-Type", "Content-Encoding", "X-Other"]),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
        max_size=3,
    ),
    body=st.binary(max_size=256),
)
def test_http_any_path_and_headers(receiver: OtlpReceiver, path: str, headers: dict[str, str], body: bytes) -> None:
    assert _post(receiver, path, body, headers) in HTTP_ALLOWED | {404, 405}


@FUZZ
@given(method=st.sampled_from(GRPC_METHODS), body=PROTOBUF_BODIES, gzip_on=st.booleans())
def test_grpc_fuzz(receiver: OtlpReceiver, method: str, body: bytes, gzip_on: bool) -> None:
    compression = grpc.Compression.Gzip if gzip_on else None
    assert _grpc_code(receiver, method, body, compression) in GRPC_ALLOWED


@FUZZ
@given(path=st.sampled_from(PATHS), body=PROTOBUF_BODIES, gzip_on=st.booleans())
def test_real_pipeline_fuzz(pipeline_receiver: OtlpReceiver, path: str, body: bytes, gzip_on: bool) -> None:
    """Malformed bodies reach the transform's own protobuf reader (the fast path): still 4xx, never 5xx."""
    headers = {"Content-Type": "application/x-protobuf"}
    if gzip_on:
        headers["Content-Encoding"] = "gzip"
        body = gzip.compress(body)
    assert _post(pipeline_receiver, path, body, headers) in HTTP_ALLOWED
    method = GRPC_METHODS[PATHS.index(path)]
    assert _grpc_code(pipeline_receiver, method, body if not gzip_on else gzip.decompress(body), None) in GRPC_ALLOWED


def test_real_pipeline_still_serving_after_the_fuzz(pipeline_receiver: OtlpReceiver) -> None:
    _still_serves(pipeline_receiver)
    for transport in ("grpc", "http"):
        for counters in pipeline_receiver.status()[transport]["signals"].values():
            assert not any(
                key.startswith("5") or key in {"INTERNAL", "UNKNOWN", "UNAVAILABLE"} for key in counters["errors"]
            )


def test_still_serving_after_the_fuzz(receiver: OtlpReceiver) -> None:
    _still_serves(receiver)
    status = receiver.status()
    for transport in ("grpc", "http"):
        for counters in status[transport]["signals"].values():
            assert not any(key.startswith("5") or key in {"INTERNAL", "UNKNOWN"} for key in counters["errors"])
