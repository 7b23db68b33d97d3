"""tests/helpers/consumertest.py: the Consumer test double behaves as the tests rely on."""

from __future__ import annotations

import threading

import pytest
from google.protobuf.message import DecodeError

from coral_ebpf.consumer import (
    Consumer,
    ConsumeResult,
    ConsumerUnavailableError,
    QueueFullError,
    SerializedTracesConsumer,
)
from tests.helpers import beyla_payloads
from tests.helpers.consumertest import CountingSink, SerializedCountingSink, SerializedSink, Sink


def test_every_double_is_a_consumer_and_only_the_serialized_ones_take_bodies() -> None:
    doubles: list[Consumer] = [Sink(), SerializedSink(), CountingSink(), SerializedCountingSink()]
    assert [isinstance(d, SerializedTracesConsumer) for d in doubles] == [False, True, False, True]


def test_sink_keeps_a_copy_of_what_it_accepts() -> None:
    sink = Sink()
    request = beyla_payloads.traces_request()
    assert sink.consume_traces(request) == ConsumeResult()
    request.resource_spans[0].scope_spans[0].spans[0].name = "changed afterwards"
    assert sink.traces == [beyla_payloads.traces_request()]
    assert len(sink.spans()) == 4
    sink.consume_metrics(beyla_payloads.metrics_request())
    sink.clear()
    assert (sink.traces, sink.metrics, sink.logs) == ([], [], [])


def test_refuse_first_then_accept() -> None:
    sink = Sink(refuse_first=2, refuse_retry_after=0.5)
    for _ in range(2):
        with pytest.raises(QueueFullError) as refused:
            sink.consume_metrics(beyla_payloads.metrics_request())
        assert refused.value.retry_after == 0.5
    sink.consume_metrics(beyla_payloads.metrics_request())
    assert (sink.refused, len(sink.metrics)) == (2, 1)


def test_behaviour_decides_and_a_refused_request_is_not_kept() -> None:
    def behaviour(signal: str) -> ConsumeResult | None:
        if signal == "metrics":
            raise ConsumerUnavailableError("stopping")
        return ConsumeResult(rejected=1, message="one bad span")

    sink = Sink(behaviour)
    assert sink.consume_traces(beyla_payloads.traces_request()) == ConsumeResult(1, "one bad span")
    with pytest.raises(ConsumerUnavailableError):
        sink.consume_metrics(beyla_payloads.metrics_request())
    assert (len(sink.traces), sink.metrics) == (1, [])


def test_forward_passes_on_and_returns_the_real_consumers_answer() -> None:
    inner = Sink(lambda signal: ConsumeResult(rejected=2))
    outer = Sink(forward=inner)
    assert outer.consume_traces(beyla_payloads.traces_request()) == ConsumeResult(rejected=2)
    assert outer.traces == inner.traces == [beyla_payloads.traces_request()]


def test_serialized_sink_decodes_bodies_and_refuses_garbage() -> None:
    sink = SerializedSink()
    body = beyla_payloads.traces_request().SerializeToString()
    sink.consume_traces_serialized(body)
    assert sink.bodies == [body] and sink.traces == [beyla_payloads.traces_request()]
    with pytest.raises(DecodeError):
        sink.consume_traces_serialized(b"\xff\xff\xff")


def test_wait_for_wakes_when_a_request_arrives() -> None:
    sink = Sink()
    threading.Timer(0.05, sink.consume_traces, args=(beyla_payloads.traces_request(),)).start()
    assert sink.wait_for(lambda: len(sink.traces) == 1, timeout=10)
    assert not sink.wait_for(lambda: len(sink.traces) == 2, timeout=0.05)


def test_counting_sinks_count_without_keeping() -> None:
    sink = SerializedCountingSink()
    sink.consume_traces(beyla_payloads.traces_request())
    sink.consume_metrics(beyla_payloads.metrics_request())
    sink.consume_traces_serialized(b"not parsed")
    assert (sink.spans, sink.observations, sink.serialized_bodies) == (4, 100 + 100 + 50 + 100, 1)
