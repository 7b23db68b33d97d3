"""Cardinality and volume of the built-in RED engine on the running kernel, with a real HTTP server:
health checks ignored (and counted), random 404 paths folded into one route, span sampling that
keeps every error and every slow request and about `ratio` of the rest, the sampled-away count exact.
"""

from __future__ import annotations

import dataclasses
import http.client
import random
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from coral_ebpf.red.engine import RedEngine
from coral_ebpf.red.sampling import SamplingSettings, ratio_bound, sampled
from coral_ebpf.red.settings import DEFAULT_IGNORED_ROUTES, RedSettings
from tests.helpers.consumertest import Sink
from tests.helpers.red_support import ServerProcess, attrs, server, spans, wait_for

# Its outcome depends on the kernel: the VM suites (make vm-test, make vagrant-test) run it.
pytestmark = pytest.mark.kernel

RATIO = 0.1
SETTINGS = RedSettings(
    engine="bcc",
    routes=("/orders/{id}",),
    export_interval=3600,
    sampling=SamplingSettings(ratio=RATIO, keep_slower_than=0.05),
)


@pytest.fixture(scope="module")
def consumer() -> Sink:
    return Sink()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, consumer: Sink) -> Iterator[RedEngine]:
    red = RedEngine(SETTINGS, consumer, tmp_path_factory.mktemp("red-volume"))
    red.start()
    yield red
    red.stop(10)


@pytest.fixture()
def app(engine: RedEngine, consumer: Sink) -> Iterator[ServerProcess]:
    """A traced http.server with the module's settings; forgotten (and the settings restored) afterwards."""
    engine.set_route_settings(SETTINGS)
    consumer.clear()
    with server("python") as proc:
        engine.set_targets([proc.entry()])
        yield proc
    engine.set_targets([])
    engine.set_route_settings(SETTINGS)
    consumer.clear()


def send(port: int, paths: list[str]) -> list[int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    statuses = []
    for path in paths:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
    connection.close()
    return statuses


def span_routes(consumer: Sink, pid: int) -> list[tuple[str, int, Any]]:
    found = []
    for _, span in spans(consumer, pid):
        attributes = attrs(span.attributes)
        found.append((attributes["http.route"], attributes["http.response.status_code"], span))
    return found


def counters(engine: RedEngine) -> dict[str, int]:
    status = engine.status()
    return {key: status[key] for key in ("ignored_requests", "not_found_folded", "sampled_away_spans", "requests")}


def test_health_checks_are_ignored_but_counted(engine: RedEngine, consumer: Sink, app: ServerProcess) -> None:
    before = counters(engine)
    assert send(app.port, [*DEFAULT_IGNORED_ROUTES] * 4) == [200] * 4 * len(DEFAULT_IGNORED_ROUTES)
    assert send(app.port, ["/orders/1", "/healthz?probe=1"]) == [200, 200]
    got = wait_for(engine.flush, consumer, app.pid, 1)
    assert dict(got) == {("GET", "/orders/{id}", 200): 1}
    assert {route for route, _, _ in span_routes(consumer, app.pid)} <= {"/orders/{id}"}  # (sampled at 0.1)
    after = counters(engine)
    assert after["ignored_requests"] - before["ignored_requests"] == 4 * len(DEFAULT_IGNORED_ROUTES) + 1
    assert after["requests"] - before["requests"] == 1

    # An empty list (applied live, as a reload does) measures health checks again.
    engine.set_route_settings(dataclasses.replace(SETTINGS, ignored_routes=(), sampling=SamplingSettings()))
    consumer.clear()
    assert send(app.port, ["/healthz", "/healthz"]) == [200, 200]
    assert dict(wait_for(engine.flush, consumer, app.pid, 2)) == {("GET", "/healthz", 200): 2}
    assert counters(engine)["ignored_requests"] == after["ignored_requests"]


def test_random_404_paths_make_one_route(engine: RedEngine, consumer: Sink, app: ServerProcess) -> None:
    rng = random.Random(15)
    words = ["admin", "wp-login", "backup", "config", "phpinfo", "shell", "old", "test", "db", "env"]
    paths = [
        f"/missing{rng.choice(words)}{rng.randrange(10**6)}/{rng.choice(words)}.php?x={index}" for index in range(500)
    ]
    before = counters(engine)
    assert set(send(app.port, paths)) == {404}
    assert send(app.port, ["/orders/7", "/fine"]) == [200, 200]
    got = wait_for(engine.flush, consumer, app.pid, 502)
    assert dict(got) == {("GET", "/**", 404): 500, ("GET", "/orders/{id}", 200): 1, ("GET", "/fine", 200): 1}
    assert counters(engine)["not_found_folded"] - before["not_found_folded"] == 500
    (served,) = [s for s in engine.status()["services"] if s["pid"] == app.pid]
    assert served["routes"] == 3  # /**, /orders/{id}, /fine: the scanner took one place of 200
    assert served["not_found_folded"] == 500


def test_low_cardinality_keeps_ten_words_per_position(engine: RedEngine, consumer: Sink, app: ServerProcess) -> None:
    words = [f"shoe-{colour}" for colour in ("red", "blue", "green", "black", "white", "grey", "pink", "gold")]
    words += [f"hat-{colour}" for colour in ("red", "blue", "green", "black", "white", "grey", "pink", "gold")]
    assert send(app.port, [f"/p/{word}" for word in words] + ["/p/shoe-red"]) == [200] * 17
    got = wait_for(engine.flush, consumer, app.pid, 17)
    expected = {("GET", f"/p/{word}", 200): 1 for word in words[:10]}
    expected[("GET", "/p/shoe-red", 200)] = 2  # learnt before the cap: keeps its name
    expected[("GET", "/p/*", 200)] = 6  # the 11th word on at that position
    assert dict(got) == expected
    (served,) = [s for s in engine.status()["services"] if s["pid"] == app.pid]
    assert served["routes"] == 11


def test_sampling_keeps_errors_and_slow_spans_and_a_tenth_of_the_rest(
    engine: RedEngine, consumer: Sink, app: ServerProcess
) -> None:
    paths = ["/fail"] * 100 + ["/slow?ms=120"] * 50 + ["/fast"] * 850
    random.Random(10).shuffle(paths)
    before = counters(engine)
    send(app.port, paths)
    got = wait_for(engine.flush, consumer, app.pid, 1000)
    assert dict(got) == {("GET", "/fail", 500): 100, ("GET", "/slow", 200): 50, ("GET", "/fast", 200): 850}

    kept = span_routes(consumer, app.pid)
    errors = [span for route, _, span in kept if route == "/fail"]
    assert len(errors) == 100 and all(span.status.code == Status.StatusCode.STATUS_CODE_ERROR for span in errors)
    assert sum(1 for route, _, _ in kept if route == "/slow") == 50
    fast = [span for route, _, span in kept if route == "/fast"]
    sampled_away = counters(engine)["sampled_away_spans"] - before["sampled_away_spans"]
    assert len(fast) + sampled_away == 850  # every span kept or counted, none lost
    (served,) = [s for s in engine.status()["services"] if s["pid"] == app.pid]
    assert served["sampled_away_spans"] == sampled_away
    # Binomial(850, 0.1): mean 85, sd 8.7; a fast request slower than 50 ms is kept as slow, which
    # only raises the count. The bounds are > 5 sd away.
    assert 40 <= len(fast) <= 170, len(fast)
    # Decided by trace id (TraceIdRatioBased): the ids of the sampled ones are in the kept range.
    fast_quick = [span for span in fast if span.end_time_unix_nano - span.start_time_unix_nano < 50_000_000]
    assert all(sampled(span.trace_id, ratio_bound(RATIO)) for span in fast_quick)


def test_status_reports_the_counts(engine: RedEngine) -> None:
    status = engine.status()
    for key in ("ignored_requests", "not_found_folded", "sampled_away_spans", "segments_capped"):
        assert isinstance(status[key], int)
