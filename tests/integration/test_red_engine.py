"""The built-in RED engine on the running kernel: real HTTP servers, real BPF, Beyla-shaped OTLP out."""

from __future__ import annotations

import dataclasses
import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from coral_ebpf.red.engine import RedEngine
from coral_ebpf.red.records import SCALE
from coral_ebpf.red.settings import RedSettings
from coral_ebpf.storage import exponential
from tests.helpers.consumertest import Sink
from tests.helpers.red_support import ServerProcess, counts, points, server, spans, wait_for
from tests.helpers.timing import eventually, quiet_period

# Its outcome depends on the kernel: the VM suites (make vm-test, make vagrant-test) run it.
pytestmark = pytest.mark.kernel

SETTINGS = RedSettings(engine="bcc", routes=("/orders/{id}",), export_interval=3600, pipeline_depth=8)


@pytest.fixture(scope="module")
def consumer() -> Sink:
    return Sink()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, consumer: Sink) -> Iterator[RedEngine]:
    red = RedEngine(SETTINGS, consumer, tmp_path_factory.mktemp("red-state"))
    red.start()
    yield red
    red.stop(10)


@pytest.fixture()
def traced(engine: RedEngine, consumer: Sink) -> Iterator[list[ServerProcess]]:
    """Servers added to this list are traced; the engine forgets them afterwards."""
    servers: list[ServerProcess] = []
    consumer.clear()
    yield servers
    engine.set_targets([])
    consumer.clear()


def start(engine: RedEngine, traced: list[ServerProcess], proc: ServerProcess) -> ServerProcess:
    traced.append(proc)
    engine.set_targets([s.entry() for s in traced])
    return proc


def get(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response.status


def raw_exchange(port: int, payload: bytes, responses: int, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        data = b""
        deadline = time.monotonic() + timeout
        while data.count(b"HTTP/1.1 ") < responses and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def mixed_traffic(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for user in range(1, 6):
        assert get(conn, f"/users/{user}") == 200
    for _ in range(3):
        assert get(conn, "/fail") == 500
    conn.close()
    for order in (7, 8):
        fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert get(fresh, f"/orders/{order}") == 200
        assert get(fresh, "/missing/thing") == 404
        fresh.close()


EXPECTED_MIX = {
    ("GET", "/users/*", 200): 5,
    ("GET", "/fail", 500): 3,
    ("GET", "/orders/{id}", 200): 2,
    ("GET", "/**", 404): 2,  # a 404 no pattern matches: red.fold_not_found
}


@pytest.mark.parametrize("kind", ["python", "uvicorn"])
def test_exact_counts_per_route_and_status(
    kind: str, engine: RedEngine, consumer: Sink, traced: list[ServerProcess]
) -> None:
    with server(kind) as proc:
        start(engine, traced, proc)
        mixed_traffic(proc.port)
        got = wait_for(engine.flush, consumer, proc.pid, sum(EXPECTED_MIX.values()))
    assert dict(got) == EXPECTED_MIX

    found = points(consumer, proc.pid)
    point = found[0]
    assert point.exponential.scale == SCALE
    assert point.temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    assert point.resource["service.name"] == f"{kind}-app"
    assert point.resource["service.instance.id"].endswith(f":{proc.pid}")
    assert point.resource["telemetry.sdk.name"] == "coral-ebpf"
    assert point.resource["telemetry.sdk.language"] == "python"
    assert point.resource["os.type"] == "linux"
    assert point.resource["process.pid"] == proc.pid
    for p in found:
        assert p.attributes["server.port"] == proc.port
        assert p.attributes["server.address"] == "127.0.0.1"
        assert p.attributes["url.scheme"] == "http"
        assert p.attributes["service.name"] == f"{kind}-app"
        assert p.exponential.count == p.count
        assert 0 < p.total < p.count * 1.0  # every request here takes well under a second

    traced_spans = spans(consumer, proc.pid)
    assert len(traced_spans) == sum(EXPECTED_MIX.values())
    errors = [span for _, span in traced_spans if span.status.code == Status.StatusCode.STATUS_CODE_ERROR]
    assert len(errors) == 3
    assert {span.name for span in errors} == {"GET /fail"}
    assert all(span.kind == Span.SpanKind.SPAN_KIND_SERVER for _, span in traced_spans)
    span_attrs = {kv.key for kv in traced_spans[0][1].attributes}
    assert {"http.request.method", "http.response.status_code", "url.path", "http.route", "server.port"} <= span_attrs


@pytest.mark.parametrize("kind", ["python", "uvicorn"])
def test_known_delay_lands_in_its_bucket(
    kind: str, engine: RedEngine, consumer: Sink, traced: list[ServerProcess]
) -> None:
    with server(kind) as proc:
        start(engine, traced, proc)
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)
        for _ in range(3):
            assert get(conn, "/slow?ms=120") == 200
        conn.close()
        wait_for(engine.flush, consumer, proc.pid, 3)
    [point] = points(consumer, proc.pid)
    assert point.count == 3
    # Every request took 120 ms and a little more (the server's own work), each in a bucket ~1 % wide.
    fastest, slowest = exponential.quantile(0.0, point.exponential), exponential.quantile(1.0, point.exponential)
    assert fastest is not None and slowest is not None
    assert 0.12 / exponential.base(SCALE) <= fastest <= slowest <= 0.25
    assert 0.36 <= point.total < 0.75


def test_keepalive_and_pipelining(engine: RedEngine, consumer: Sink, traced: list[ServerProcess]) -> None:
    with server("python") as proc:
        start(engine, traced, proc)
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)
        for _ in range(40):
            assert get(conn, "/keep") == 200
        conn.close()
        pipeline = b"".join(
            f"GET /pipe/{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for name in ("alpha", "beta", "gamma", "delta")
        )
        data = raw_exchange(proc.port, pipeline, responses=4)
        assert data.count(b"HTTP/1.1 200") == 4
        got = wait_for(engine.flush, consumer, proc.pid, 44)
    assert dict(got) == {
        ("GET", "/keep", 200): 40,
        ("GET", "/pipe/alpha", 200): 1,
        ("GET", "/pipe/beta", 200): 1,
        ("GET", "/pipe/gamma", 200): 1,
        ("GET", "/pipe/delta", 200): 1,
    }


def test_request_line_split_across_reads(engine: RedEngine, consumer: Sink, traced: list[ServerProcess]) -> None:
    with server("python") as proc:
        start(engine, traced, proc)
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
            for piece in (b"GE", b"T /split/pa", b"th/here HTTP/1.1\r\nHo", b"st: x\r\n\r\n"):
                sock.sendall(piece)
                time.sleep(0.05)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        got = wait_for(engine.flush, consumer, proc.pid, 1)
    assert dict(got) == {("GET", "/split/path/here", 200): 1}
    [point] = points(consumer, proc.pid)
    assert point.total >= 0.1  # timed from the first bytes of the request line


def test_large_body_is_not_taken_for_requests(engine: RedEngine, consumer: Sink, traced: list[ServerProcess]) -> None:
    fake = b"GET /evil HTTP/1.1\r\nHost: x\r\n\r\n"
    body = (fake * (1024 * 1024 // len(fake) + 1))[: 1024 * 1024]
    with server("python") as proc:
        start(engine, traced, proc)
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
            sock.sendall(f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            time.sleep(0.05)
            for offset in range(0, len(body), 64 * 1024):
                sock.sendall(body[offset : offset + 64 * 1024])  # each chunk starts with a request line
                time.sleep(0.002)
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += sock.recv(65536)
            assert reply.startswith(b"HTTP/1.1 201")
            sock.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while b"HTTP/1.1 200" not in reply:
                chunk = sock.recv(65536)
                assert chunk, "server closed before answering /after"
                reply += chunk
        got = wait_for(engine.flush, consumer, proc.pid, 2)
    assert dict(got) == {("POST", "/upload", 201): 1, ("GET", "/after", 200): 1}


def test_connection_closed_without_response_is_an_error(
    engine: RedEngine, consumer: Sink, traced: list[ServerProcess]
) -> None:
    with server("python") as proc:
        start(engine, traced, proc)
        data = raw_exchange(proc.port, b"GET /drop HTTP/1.1\r\nHost: x\r\n\r\n", responses=1)
        assert data == b""
        got = wait_for(engine.flush, consumer, proc.pid, 1)
    assert dict(got) == {("GET", "/drop", 0): 1}
    [(_, span)] = spans(consumer, proc.pid)
    assert span.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert engine.status()["no_response"] >= 1


def test_non_http_protocol_makes_no_records(engine: RedEngine, consumer: Sink, traced: list[ServerProcess]) -> None:
    before = engine.status()["kernel"]["non_http_connections"]
    with server("echo") as proc:
        start(engine, traced, proc)
        for payload in (b"*1\r\n$4\r\nPING\r\n", b"\x00\x01binary\xff" * 10, b"HELLO world\r\n", b"PUTS x\r\n"):
            with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
                sock.sendall(payload)
                assert sock.recv(65536)
        quiet_period(0.3)  # records, if the probe made any, would reach the buffer by now
        engine.flush()
    assert counts(consumer, proc.pid) == {}
    assert spans(consumer, proc.pid) == []
    assert engine.status()["kernel"]["non_http_connections"] >= before + 4


def test_only_target_processes_are_traced(engine: RedEngine, consumer: Sink, traced: list[ServerProcess]) -> None:
    with server("python") as traced_proc, server("python") as other:
        start(engine, traced, traced_proc)
        for port in (traced_proc.port, other.port):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            assert get(conn, "/hello") == 200
            conn.close()
        got = wait_for(engine.flush, consumer, traced_proc.pid, 1)
        assert dict(got) == {("GET", "/hello", 200): 1}
        assert counts(consumer, other.pid) == {}
    assert engine.status()["unknown_process"] == 0


def test_tracing_follows_the_target_set(engine: RedEngine, consumer: Sink, traced: list[ServerProcess]) -> None:
    """The kernel's pre-filter and target map follow set_targets in both directions."""
    with server("python") as first, server("python") as second:
        start(engine, traced, first)
        conn = http.client.HTTPConnection("127.0.0.1", first.port, timeout=10)
        assert get(conn, "/one") == 200
        wait_for(engine.flush, consumer, first.pid, 1)
        traced.remove(first)
        start(engine, traced, second)  # the first server is no longer traced
        assert get(conn, "/one") == 200
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", second.port, timeout=10)
        assert get(conn, "/two") == 200
        conn.close()
        assert dict(wait_for(engine.flush, consumer, second.pid, 1)) == {("GET", "/two", 200): 1}
        assert dict(counts(consumer, first.pid)) == {("GET", "/one", 200): 1}


def test_status_names_the_services(engine: RedEngine, traced: list[ServerProcess]) -> None:
    with server("python") as proc:
        start(engine, traced, proc)
        status = engine.status()
    assert status["state"] == "running"
    assert status["engine"] == "bcc"
    assert status["transport"] in ("ring_buffer", "perf_buffer")
    assert [s["pid"] for s in status["services"]] == [proc.pid]
    assert status["services"][0]["ports"] == [proc.port]


def test_refused_exports_are_retried_without_loss(tmp_path: Path) -> None:
    consumer = Sink(refuse_first=3)
    red = RedEngine(RedSettings(engine="bcc", export_interval=0.2), consumer, tmp_path)
    red.start()
    try:
        with server("python") as proc:
            red.set_targets([proc.entry()])
            conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)
            for _ in range(10):
                assert get(conn, "/retry") == 200
            conn.close()
            eventually(
                lambda: counts(consumer, proc.pid),
                15,
                "10 requests exported after the refusals",
                until=lambda got: sum(got.values()) >= 10,
                interval=0.1,
            )
            quiet_period(0.5)  # a request exported twice would have arrived by now
            got = counts(consumer, proc.pid)
            assert dict(got) == {("GET", "/retry", 200): 10}
            assert consumer.refused == 3
            assert len(spans(consumer, proc.pid)) == 10
            assert red.status()["export_retries"] >= 1
    finally:
        red.stop(10)


def test_perf_buffer_transport(tmp_path: Path) -> None:
    """The fallback for kernels without ring buffers (< 5.8) carries the same records."""
    consumer = Sink()
    red = RedEngine(dataclasses.replace(SETTINGS, event_channel="perf_buffer"), consumer, tmp_path)
    red.start()
    try:
        assert red.status()["transport"] == "perf_buffer"
        with server("python") as proc:
            red.set_targets([proc.entry()])
            mixed_traffic(proc.port)
            got = wait_for(red.flush, consumer, proc.pid, sum(EXPECTED_MIX.values()))
        assert dict(got) == EXPECTED_MIX
    finally:
        red.stop(10)
