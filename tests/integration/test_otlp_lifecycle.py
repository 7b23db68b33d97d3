"""Start, stop and status of the receiver: binding errors, IPv6, draining in-flight requests."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from coral_ebpf.consumer import ConsumeResult
from coral_ebpf.errors import ConfigError, CoralError
from coral_ebpf.otlp.receiver import OtlpReceiver
from coral_ebpf.otlp.settings import ConnectionLimits, OtlpSettings
from tests.helpers import beyla_payloads
from tests.helpers.consumertest import Sink
from tests.helpers.otlp_receiver import running_receiver
from tests.helpers.timing import eventually


@pytest.fixture
def taken_port() -> Iterator[int]:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


def test_grpc_port_taken_names_the_endpoint(taken_port: int) -> None:
    receiver = OtlpReceiver(OtlpSettings(grpc_endpoint=f"127.0.0.1:{taken_port}", http_endpoint=None), Sink())
    with pytest.raises(CoralError, match=rf"OTLP/gRPC on 127.0.0.1:{taken_port}") as caught:
        receiver.start()
    assert "otlp.grpc_endpoint" in caught.value.hint
    assert receiver.status()["state"] == "stopped"


def test_http_port_taken_names_the_endpoint_and_releases_grpc(taken_port: int) -> None:
    settings = OtlpSettings(grpc_endpoint="127.0.0.1:0", http_endpoint=f"127.0.0.1:{taken_port}")
    receiver = OtlpReceiver(settings, Sink())
    with pytest.raises(CoralError, match=rf"OTLP/HTTP on 127.0.0.1:{taken_port}: .*in use"):
        receiver.start()
    assert receiver.grpc_address is None and receiver.status()["state"] == "stopped"


def test_grpc_port_shared_with_another_grpc_server_is_refused() -> None:
    """grpcio sets SO_REUSEPORT by default; two receivers must not silently share a port."""
    with running_receiver(http_endpoint=None) as (first, _):
        assert first.grpc_address is not None
        second = OtlpReceiver(OtlpSettings(grpc_endpoint=first.grpc_address, http_endpoint=None), Sink())
        with pytest.raises(CoralError, match="cannot listen for OTLP/gRPC"):
            second.start()


@pytest.mark.parametrize(
    ("settings", "error", "pattern"),
    [
        (OtlpSettings(grpc_endpoint="no-port", http_endpoint=None), ConfigError, "otlp.grpc_endpoint"),
        (OtlpSettings(grpc_endpoint=None, http_endpoint="::1:4318"), ConfigError, "IPv6 address in brackets"),
        (OtlpSettings(grpc_endpoint="192.0.2.77:0", http_endpoint=None), CoralError, "OTLP/gRPC on 192.0.2.77:0"),
        (OtlpSettings(grpc_endpoint=None, http_endpoint="192.0.2.77:0"), CoralError, "OTLP/HTTP on 192.0.2.77:0"),
        (OtlpSettings(grpc_endpoint=None, http_endpoint=None, max_body_bytes=0), ConfigError, "max_body_bytes"),
    ],
    ids=["no-port", "bare-ipv6", "grpc-foreign-address", "http-foreign-address", "zero-limit"],
)
def test_invalid_addresses_are_clear_errors(settings: OtlpSettings, error: type[Exception], pattern: str) -> None:
    receiver = OtlpReceiver(settings, Sink())
    with pytest.raises(error, match=pattern):
        receiver.start()
    assert receiver.status()["state"] == "stopped"


def test_ipv6_loopback_for_both_transports() -> None:
    with running_receiver(grpc_endpoint="[::1]:0", http_endpoint="[::1]:0") as (receiver, consumer):
        assert receiver.grpc_address is not None and receiver.grpc_address.startswith("[::1]:")
        assert receiver.http_address is not None and receiver.http_address.startswith("[::1]:")
        with grpc.insecure_channel(receiver.grpc_address) as ch:
            trace_service_pb2_grpc.TraceServiceStub(ch).Export(beyla_payloads.traces_request(), timeout=10)
        port = int(receiver.http_address.rpartition(":")[2])
        connection = http.client.HTTPConnection("::1", port, timeout=10)
        body = beyla_payloads.traces_request().SerializeToString()
        connection.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
        assert connection.getresponse().status == 200
        assert len(consumer.traces) == 2


def test_defaults_are_loopback() -> None:
    settings = OtlpSettings()
    assert (settings.grpc_endpoint, settings.http_endpoint) == ("127.0.0.1:4317", "127.0.0.1:4318")


def test_disabled_listener_reports_disabled() -> None:
    with running_receiver(grpc_endpoint=None) as (receiver, _):
        status = json.loads(json.dumps(receiver.status()))  # JSON-ready as the control socket sends it
        assert status["state"] == "running"
        assert status["grpc"] == {**status["grpc"], "enabled": False, "address": None}
        assert status["http"]["enabled"] and status["http"]["address"] == receiver.http_address


def test_stop_lets_in_flight_requests_finish() -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def slow(signal: str) -> ConsumeResult | None:
        entered.release()
        release.wait(10)
        return None

    consumer = Sink(slow)
    receiver = OtlpReceiver(OtlpSettings(grpc_endpoint="127.0.0.1:0", http_endpoint="127.0.0.1:0"), consumer)
    receiver.start()
    grpc_address, http_address = receiver.grpc_address, receiver.http_address
    assert grpc_address is not None and http_address is not None
    results: dict[str, object] = {}

    def grpc_call() -> None:
        with grpc.insecure_channel(grpc_address) as ch:
            trace_service_pb2_grpc.TraceServiceStub(ch).Export(beyla_payloads.traces_request(), timeout=20)
            results["grpc"] = "ok"

    def http_call() -> None:
        host, _, port = http_address.rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=20)
        body = beyla_payloads.traces_request().SerializeToString()
        connection.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
        results["http"] = connection.getresponse().status

    callers = [threading.Thread(target=grpc_call), threading.Thread(target=http_call)]
    for caller in callers:
        caller.start()
    assert entered.acquire(timeout=10) and entered.acquire(timeout=10)  # both requests are in the consumer

    stopper = threading.Thread(target=receiver.stop, args=(15.0,))
    stopper.start()

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", int(http_address.rpartition(":")[2])), timeout=2).close()
        except OSError:
            return True
        return False

    # New connections are refused while the old requests drain.
    eventually(refused, what="new connections refused once stop() began")
    assert receiver.status()["state"] == "stopping"
    release.set()
    stopper.join(20)
    for caller in callers:
        caller.join(20)
    assert results == {"grpc": "ok", "http": 200}
    assert len(consumer.traces) == 2
    assert receiver.status()["state"] == "stopped"


def test_restart_after_stop() -> None:
    receiver = OtlpReceiver(OtlpSettings(grpc_endpoint="127.0.0.1:0", http_endpoint="127.0.0.1:0"), Sink())
    receiver.start()
    receiver.stop(2.0)
    receiver.start()
    try:
        assert receiver.status()["state"] == "running" and receiver.http_address is not None
    finally:
        receiver.stop(2.0)


def test_http_requests_beyond_the_cap_wait_for_a_decode_slot() -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def slow(signal: str) -> ConsumeResult | None:
        entered.release()
        release.wait(10)
        return None

    with running_receiver(Sink(slow), grpc_endpoint=None, limits=ConnectionLimits(max_concurrent_calls=1)) as (
        receiver,
        consumer,
    ):
        assert receiver.http_address is not None
        host, _, port = receiver.http_address.rpartition(":")
        statuses: list[int] = []

        def call() -> None:
            connection = http.client.HTTPConnection(host, int(port), timeout=20)
            body = beyla_payloads.traces_request().SerializeToString()
            connection.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
            statuses.append(connection.getresponse().status)

        callers = [threading.Thread(target=call) for _ in range(2)]
        for caller in callers:
            caller.start()
        assert entered.acquire(timeout=10)
        assert not entered.acquire(timeout=0.5)  # the second request waits for the slot
        release.set()
        for caller in callers:
            caller.join(20)
        assert statuses == [200, 200] and len(consumer.traces) == 2
