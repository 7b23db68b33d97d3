"""OTLP/HTTP: separate idle and header deadlines, and request bodies held in the memory budget while read.

Real receiver and data path (receiver -> memory budget -> transform -> DuckDB), real sockets playing
slow clients, the OpenTelemetry SDK's OTLP/HTTP exporter as the normal client. Timers can only fire
late on a loaded machine, never early: the "still open" checks wait well inside the deadline.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from coral_ebpf.memory.budget import MemoryBudget
from coral_ebpf.memory.consumer import BudgetedConsumer
from coral_ebpf.otlp.receiver import OtlpReceiver
from coral_ebpf.otlp.settings import ConnectionLimits, OtlpSettings
from coral_ebpf.storage.writer import Storage
from tests.helpers.beyla_otlp import beyla_resource, http_server_span, new_ids, trace_request
from tests.helpers.datapath import data_path

MiB = 1024 * 1024


@contextlib.contextmanager
def served(
    tmp_path: Path, limits: ConnectionLimits, in_flight_limit: int = 64 * MiB
) -> Iterator[tuple[Storage, MemoryBudget, tuple[str, int]]]:
    with data_path(tmp_path) as (storage, processor):
        budget = MemoryBudget(512 * MiB, 96 * MiB, lambda: storage.bytes_in_flight)
        budget.in_flight_limit = in_flight_limit
        settings = OtlpSettings(grpc_endpoint=None, http_endpoint="127.0.0.1:0", limits=limits)
        receiver = OtlpReceiver(settings, BudgetedConsumer(processor, budget, retry_after=2.0))
        receiver.start()
        try:
            assert receiver.http_address is not None
            host, _, port = receiver.http_address.rpartition(":")
            yield storage, budget, (host, int(port))
        finally:
            receiver.stop(5.0)


def traces_body(service: str, spans: int = 1) -> bytes:
    start = time.time_ns() - 1_000_000_000
    made = [http_server_span(*new_ids(), start_ns=start, duration_ns=1000) for _ in range(spans)]
    return trace_request(beyla_resource(service), made).SerializeToString()


def request_head(length: int) -> bytes:
    return (
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        + f"Content-Length: {length}\r\n\r\n".encode()
    )


def answer(connection: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes the connection or an answer is complete."""
    connection.settimeout(within)
    received = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := connection.recv(65536):
            received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            length = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
            if length and len(body) >= int(length[0].split(b":")[1]):
                break
    return received


def closed_within(connection: socket.socket, seconds: float) -> bool:
    connection.settimeout(seconds)
    try:
        return connection.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def stored(storage: Storage, service: str) -> int:
    assert storage.flush(30.0)
    row = storage.reader().execute("SELECT count(*) FROM otel_spans_raw WHERE service_name = ?", [service]).fetchone()
    return int(row[0]) if row else 0


def test_an_idle_connection_outlives_the_header_deadline_and_closes_at_the_idle_one(tmp_path: Path) -> None:
    limits = ConnectionLimits(idle_timeout=4.0, header_timeout=0.5)
    with served(tmp_path, limits) as (_, _, address), socket.create_connection(address) as idle:
        started = time.monotonic()
        assert not closed_within(idle, 2.0), "idle, not slow: the header deadline does not apply"
        assert closed_within(idle, 30.0)
        assert time.monotonic() - started >= 4.0


def test_slow_headers_get_408_while_the_connection_is_far_from_idle(tmp_path: Path) -> None:
    limits = ConnectionLimits(idle_timeout=60.0, header_timeout=1.0)
    with served(tmp_path, limits) as (_, _, address), socket.create_connection(address) as loris:
        loris.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        reply = answer(loris, 30.0)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert b"otlp.header_timeout" in reply
        assert closed_within(loris, 10.0)


def test_a_request_starting_just_before_the_idle_deadline_gets_its_header_time(tmp_path: Path) -> None:
    """With aiohttp's single keep-alive timer this request was cut off half-way through its headers."""
    limits = ConnectionLimits(idle_timeout=2.0, header_timeout=10.0)
    with served(tmp_path, limits) as (storage, _, address), socket.create_connection(address) as slow:
        body = traces_body("just-in-time")
        head = request_head(len(body))
        time.sleep(1.5)  # the client's own pace: idle for most of the idle deadline
        slow.sendall(head[:20])
        time.sleep(1.5)  # the idle deadline has passed; the header deadline has not
        slow.sendall(head[20:] + body)
        reply = answer(slow, 30.0)
        assert reply.startswith(b"HTTP/1.1 200"), reply
        assert stored(storage, "just-in-time") == 1


def test_a_body_is_held_in_the_memory_budget_while_it_is_read(tmp_path: Path) -> None:
    limits = ConnectionLimits(idle_timeout=60.0, header_timeout=60.0, body_timeout=60.0)
    with served(tmp_path, limits, in_flight_limit=1 * MiB) as (storage, budget, address):
        announced = 700 * 1024
        with socket.create_connection(address) as slow:
            slow.sendall(request_head(announced) + b"\x0a" * 100)  # the rest is slow to come
            deadline = time.monotonic() + 30
            while budget.status()["in_flight_bytes"] < announced:
                assert time.monotonic() < deadline, budget.status()
                time.sleep(0.05)
            with socket.create_connection(address) as second:
                second.sendall(request_head(announced))
                reply = answer(second, 30.0)
            assert reply.startswith(b"HTTP/1.1 429"), reply
            assert b"Retry-After: " in reply and b"memory budget" in reply
        # The slow body's bytes are let go with its connection; a normal client is served again.
        deadline = time.monotonic() + 30
        while budget.status()["in_flight_bytes"]:
            assert time.monotonic() < deadline, budget.status()
            time.sleep(0.05)
        exporter = OTLPSpanExporter(endpoint=f"http://{address[0]}:{address[1]}/v1/traces", timeout=30)
        provider = TracerProvider(resource=Resource.create({"service.name": "after-slow-body"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        provider.get_tracer("budget").start_span("GET /after").end()
        provider.shutdown()
        assert stored(storage, "after-slow-body") == 1
