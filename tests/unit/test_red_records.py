"""Event decoding, histogram aggregation and the OTLP the engine builds, without the kernel.

The engine is fed events by a stand-in for the BPF probe (the real probe runs in
tests/integration/test_red_engine.py); what is checked here is the user-space half.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from coral_ebpf.discovery.model import Listener, ServiceEntry
from coral_ebpf.probes.http_red.decoder import RedEvent, attributes_key, decode_event, encode_event
from coral_ebpf.probes.http_red.layout import FLAG_CLOSED, FLAG_SCAN, FLAG_TRUNCATED, event_size
from coral_ebpf.red.engine import THREAD_NICE, RedEngine
from coral_ebpf.red.records import MAX_BUCKETS, SCALE, DurationAggregator, metrics_request
from coral_ebpf.red.sampling import SamplingSettings, ratio_bound, sampled
from coral_ebpf.red.settings import RedSettings
from coral_ebpf.storage import exponential
from tests.helpers.consumertest import Sink
from tests.helpers.red_support import counts, points, spans
from tests.helpers.timing import eventually

PATH_MAX = 64


def encode(target: bytes, status: int = 200, flags: int = 0, method: int = 1, path_len: int | None = None) -> bytes:
    """An event laid out as struct red_event in bpf/http_red/http_red.h, written independently of the decoder."""
    header = struct.pack(
        "<QQQIiH2xIiiHHBBBx16s",
        1_000,  # start_ns
        2_000,  # end_ns
        7,  # conn_id
        43,  # pid
        5,  # fd
        51234,  # peer_port
        42,  # tgid
        3,  # listen_fd
        -1,  # inferred_fd
        status,
        len(target) if path_len is None else path_len,
        method,
        flags,
        2,  # AF_INET
        bytes([127, 0, 0, 1]) + bytes(12),
    )
    return header + target.ljust(PATH_MAX, b"\0")


def test_event_layout_matches_the_bpf_struct() -> None:
    assert event_size(128) == 72 + 128  # struct red_event: 72-byte header, then path[RED_PATH_MAX]


def test_decode_event() -> None:
    event = decode_event(encode(b"/users/1", status=503), PATH_MAX)
    assert event is not None
    assert (event.method, event.target, event.status, event.tgid, event.pid) == ("GET", "/users/1", 503, 42, 43)
    assert (event.peer_address, event.peer_port, event.listen_fd, event.fd) == ("127.0.0.1", 51234, 3, 5)
    assert decode_event(b"short", PATH_MAX) is None


def test_encode_event_round_trips_and_keys_only_attribute_bytes() -> None:
    event = decode_event(encode(b"/users/1", status=503), PATH_MAX)
    assert event is not None
    assert decode_event(encode_event(event, PATH_MAX), PATH_MAX) == event
    # Requests that differ only in time, connection or client port share the attribute bytes.
    later = RedEvent(5, 9, 8, 42, 44, 6, 3, 503, "GET", "/users/1", 0, "127.0.0.1", 4000)
    assert attributes_key(encode_event(later, PATH_MAX)) == attributes_key(encode(b"/users/1", status=503))
    other_route = RedEvent(5, 9, 8, 42, 44, 6, 3, 503, "GET", "/users/2", 0, "127.0.0.1", 4000)
    assert attributes_key(encode_event(other_route, PATH_MAX)) != attributes_key(encode(b"/users/1", status=503))
    ipv6 = RedEvent(5, 9, 8, 42, 44, 6, 3, 200, "POST", "/x", 0, "2001:db8::1", 4000)
    assert decode_event(encode_event(ipv6, PATH_MAX), PATH_MAX) == ipv6


def test_decode_raw_target_finds_its_end() -> None:
    event = decode_event(encode(b"/pipe/b HTTP/1.1\r\nHost", flags=FLAG_SCAN), PATH_MAX)
    assert event is not None and event.target == "/pipe/b" and not event.truncated
    event = decode_event(encode(b"/q?x=1 HTTP/1.1", flags=FLAG_SCAN), PATH_MAX)
    assert event is not None and event.target == "/q"
    full = b"/" + b"a" * (PATH_MAX - 1)
    event = decode_event(encode(full, flags=FLAG_SCAN), PATH_MAX)
    assert event is not None and event.truncated


def test_histograms_are_exponential_at_scale_6() -> None:
    aggregator = DurationAggregator("delta", 0)
    attributes = (("http.route", "/x"),)
    for seconds in (0.0, 0.005, 0.0051, 0.3, 12.0):
        aggregator.record(1, attributes, seconds, 10)
    aggregator.record_ns(1, attributes, [250_000, 1_000], 10)  # 250 µs and 1 µs
    series = aggregator.take(20)
    request = metrics_request(series, {1: [("service.name", "svc")]}, "delta", 20)
    metric = request.resource_metrics[0].scope_metrics[0].metrics[0]
    [point] = metric.exponential_histogram.data_points
    assert point.scale == SCALE == 6 and point.zero_count == 1
    offset, counts = point.positive.offset, list(point.positive.bucket_counts)
    filled = {offset + position: count for position, count in enumerate(counts) if count}
    # Bucket i holds (2^(i/64), 2^((i+1)/64)]: 0.005 s is just above 2^(-489/64).
    expected = [1e-6, 250e-6, 0.005, 0.0051, 0.3, 12.0]
    assert filled == {exponential.index_of(value, 6): 1 for value in expected}
    for value in expected:
        index = exponential.index_of(value, 6)
        assert exponential.lower_bound(index, 6) < value <= exponential.lower_bound(index + 1, 6)
    assert point.count == 7 and point.min == 0.0 and point.max == 12.0


def test_a_point_wider_than_max_buckets_is_downscaled() -> None:
    aggregator = DurationAggregator("delta", 0)
    aggregator.record_ns(1, (), [1, 12_000_000_000], 10)  # 1 ns and 12 s: 2144 buckets at scale 6
    request = metrics_request(aggregator.take(20), {}, "delta", 20)
    [point] = request.resource_metrics[0].scope_metrics[0].metrics[0].exponential_histogram.data_points
    assert point.scale == SCALE - 1 and len(point.positive.bucket_counts) <= MAX_BUCKETS
    assert sum(point.positive.bucket_counts) == 2
    assert point.start_time_unix_nano == 0 and point.time_unix_nano == 20
    assert len(aggregator) == 0  # delta starts afresh


def test_cumulative_keeps_series_and_delta_folds_back() -> None:
    cumulative = DurationAggregator("cumulative", 0)
    cumulative.record(1, (), 0.1, 5)
    assert cumulative.take(10)[(1, ())].count == 1
    cumulative.record(1, (), 0.1, 15)
    assert cumulative.take(20)[(1, ())].count == 2

    delta = DurationAggregator("delta", 0)
    delta.record(1, (), 0.1, 5)
    refused = delta.take(10)
    delta.record(1, (), 0.2, 15)
    delta.give_back(refused)
    merged = delta.take(20)[(1, ())]
    assert merged.count == 2 and merged.start_ns == 0


class StandInProbe:
    """Plays back events the way HttpRedProbe delivers them: on poll()."""

    transport = "stand-in"

    def __init__(self, handler: Callable[[list[bytes]], None], path_max: int) -> None:
        self.handler = handler
        self.path_max = path_max
        self.queue: list[RedEvent] = []
        self.targets: set[int] = set()

    def load(self) -> None:
        pass

    def set_targets(self, tgids: Iterable[int]) -> None:
        self.targets = set(tgids)

    def poll(self) -> None:
        queue, self.queue = self.queue, []
        records = [encode_event(event, self.path_max) for event in queue if event.tgid in self.targets]
        if records:
            self.handler(records)

    def counters(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


def make_event(pid: int, target: str, status: int, flags: int = 0) -> RedEvent:
    end = time.monotonic_ns()
    return RedEvent(end - 10_000_000, end, 1, pid, pid, 5, 3, status, "GET", target, flags, "10.1.2.3", 4000)


def make_engine(settings: RedSettings, consumer: Sink, tmp_path: Path) -> tuple[RedEngine, Any]:
    holder: dict[str, StandInProbe] = {}

    def factory(handler: Callable[[list[bytes]], None]) -> Any:
        holder["probe"] = StandInProbe(handler, settings.path_max)
        return holder["probe"]

    engine = RedEngine(settings, consumer, tmp_path, hostname="host-a", probe_factory=factory)
    engine.start()
    return engine, holder["probe"]


def entry(pid: int) -> ServiceEntry:
    return ServiceEntry(
        pid=pid, netns=0, name="shop", exe="/usr/bin/python3", cmdline=(), listeners=(Listener(port=8080),)
    )


def test_engine_builds_beyla_shaped_records(tmp_path: Path) -> None:
    pid = os.getpid()  # a live pid, so /proc lookups behave
    consumer = Sink()
    engine, probe = make_engine(RedSettings(export_interval=3600), consumer, tmp_path)
    try:
        engine.set_targets([entry(pid)])
        probe.queue += [
            make_event(pid, "/users/1", 200),
            make_event(pid, "/users/2", 200),
            make_event(pid, "/users/3", 503),
            make_event(pid, "/cart", 0, flags=FLAG_CLOSED),
            make_event(pid, "/long/trunc", 200, flags=FLAG_TRUNCATED),
            make_event(pid + 1, "/other", 200),  # not a target
        ]
        engine.flush()
    finally:
        engine.stop(5)
    assert dict(counts(consumer, pid)) == {
        ("GET", "/users/*", 200): 2,
        ("GET", "/users/*", 503): 1,
        ("GET", "/cart", 0): 1,
        ("GET", "/long/*", 200): 1,
    }
    point = points(consumer, pid)[0]
    assert point.temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    assert point.resource["service.instance.id"] == f"host-a:{pid}"
    assert point.resource["host.name"] == "host-a"
    assert point.resource["telemetry.sdk.name"] == "coral-ebpf"
    assert point.attributes["server.port"] == 8080  # the only listener (no such fd in this process)
    assert point.attributes["server.address"] == "host-a"  # not loopback, no local address known
    errors = [s for _, s in spans(consumer, pid) if s.status.code == Status.StatusCode.STATUS_CODE_ERROR]
    assert sorted(s.name for s in errors) == ["GET /cart", "GET /users/*"]
    client = {kv.key: kv.value.string_value for kv in spans(consumer, pid)[0][1].attributes}["client.address"]
    assert client == "10.1.2.3"


def test_engine_retries_refused_exports_and_bounds_spans(tmp_path: Path) -> None:
    pid = os.getpid()
    consumer = Sink(refuse_first=2)
    engine, probe = make_engine(RedSettings(export_interval=3600, max_pending_spans=3), consumer, tmp_path)
    try:
        engine.set_targets([entry(pid)])
        probe.queue += [make_event(pid, "/a", 200) for _ in range(5)]
        engine.flush()  # metrics refused: folded back
        assert consumer.metrics == []

        def flushed(kept: Callable[[], object]) -> Callable[[], object]:
            def probe() -> object:
                engine.flush()  # a no-op within the engine's retry-after
                return kept()

            return probe

        # The retry accepts the metrics and refuses the spans (the second refusal); the next one takes them.
        eventually(flushed(lambda: consumer.metrics), what="the metrics export retried")
        eventually(flushed(lambda: spans(consumer, pid)), what="the spans export retried")
    finally:
        engine.stop(5)
    assert dict(counts(consumer, pid)) == {("GET", "/a", 200): 5}
    assert len(spans(consumer, pid)) == 3  # bounded to max_pending_spans
    status = engine.status()
    assert status["dropped_spans"] == 2
    assert status["export_retries"] == 2


def test_engine_threads_run_at_lower_priority(tmp_path: Path) -> None:
    engine, _ = make_engine(RedSettings(export_interval=3600), Sink(), tmp_path)
    try:

        def nices() -> dict[str, int]:
            threads = {t.name: t.native_id for t in threading.enumerate() if t.name in ("red-poll", "red-export")}
            return {name: _nice(tid) for name, tid in threads.items() if tid is not None}

        expected = {"red-poll": THREAD_NICE, "red-export": THREAD_NICE}
        eventually(nices, 5, "the engine's threads at THREAD_NICE", until=lambda found: found == expected)
    finally:
        engine.stop(5)


def _nice(tid: int) -> int:
    # /proc/<pid>/task/<tid>/stat: field 19 is the nice value (fields after the command name)
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


def test_engine_ignores_folds_and_samples_and_counts_each(tmp_path: Path) -> None:
    pid = os.getpid()
    consumer = Sink()
    settings = RedSettings(export_interval=3600, sampling=SamplingSettings(ratio=0.1))
    engine, probe = make_engine(settings, consumer, tmp_path)
    try:
        engine.set_targets([entry(pid)])
        probe.queue += [make_event(pid, "/healthz", 200) for _ in range(7)]
        probe.queue += [make_event(pid, f"/wp-{index}.php", 404) for index in range(50)]
        probe.queue += [make_event(pid, "/fail", 500) for _ in range(20)]
        probe.queue += [make_event(pid, "/ok", 200) for _ in range(400)]
        engine.flush()
    finally:
        engine.stop(5)
    assert dict(counts(consumer, pid)) == {
        ("GET", "/**", 404): 50,
        ("GET", "/fail", 500): 20,
        ("GET", "/ok", 200): 400,
    }
    status = engine.status()
    (served,) = status["services"]
    assert {key: served[key] for key in ("ignored_requests", "not_found_folded")} == {
        "ignored_requests": 7,
        "not_found_folded": 50,
    }
    assert served["sampled_away_spans"] == status["sampled_away_spans"]
    assert status["ignored_requests"] == 7
    assert status["not_found_folded"] == 50
    assert status["requests"] == 470
    kept = [span for _, span in spans(consumer, pid)]
    errors = [span for span in kept if span.status.code == Status.StatusCode.STATUS_CODE_ERROR]
    assert len(errors) == 20  # every error kept
    assert len(kept) - len(errors) + status["sampled_away_spans"] == 450  # every other span kept or counted
    assert 10 <= len(kept) - len(errors) <= 90  # about a tenth of 450
    sampled_ids = [span.trace_id for span in kept if span.status.code != Status.StatusCode.STATUS_CODE_ERROR]
    assert all(sampled(trace_id, ratio_bound(0.1)) for trace_id in sampled_ids)  # the id the decision was on
