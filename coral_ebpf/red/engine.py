"""`RedEngine`: the built-in RED engine as an agent component.

Events from the BPF probe become Beyla-shaped OTLP records (histograms and SERVER spans) that are
handed to a `Consumer` — the same interface the OTLP receiver feeds — every `red.export_interval`.
A consumer that is full (QueueFullError) or unavailable gets the same data again later: metrics are
folded into the next export, spans wait in a bounded queue (oldest dropped and counted).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from coral_ebpf.consumer import Consumer, ConsumerUnavailableError, QueueFullError, SerializedTracesConsumer
from coral_ebpf.discovery.model import ServiceEntry
from coral_ebpf.discovery.registry import service_fields
from coral_ebpf.errors import CoralError
from coral_ebpf.probes.http_red.decoder import TIMES, RedEvent, attributes_key, decode_event
from coral_ebpf.probes.http_red.layout import FLAG_INFERRED, event_size
from coral_ebpf.probes.http_red.loader import HttpRedProbe
from coral_ebpf.red.records import (
    Attribute,
    DurationAggregator,
    SpanRecord,
    encoded_traces_request,
    metrics_request,
    span_template,
    traces_request,
)
from coral_ebpf.red.routes import NOT_FOUND, WILDCARD_ROUTE, IgnoredRoutes, RouteResolver, normalize_target
from coral_ebpf.red.sampling import SpanSampler
from coral_ebpf.red.services import ServiceInfo, SocketResolver
from coral_ebpf.red.settings import RedSettings

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.1
SPANS_PER_REQUEST = 2000
KIND_CACHE_SIZE = 65536
# Figures kept per traced process as well as engine-wide.
SERVICE_COUNTS = ("ignored_requests", "not_found_folded", "sampled_away_spans")
# The engine's threads need ~1.3 us of CPU per request; at nice 10 they still get ~10 % of a CPU
# shared with a busy nice-0 process, far more than they use, but no longer take turns with it.
THREAD_NICE = 10


def _lower_priority() -> None:
    """Run the calling thread at THREAD_NICE: on a saturated host the traced services get the CPU first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), THREAD_NICE)
    except OSError as exc:
        log.debug("could not lower the RED engine thread's priority", extra={"fields": {"error": str(exc)}})


class _Kind:
    """One kind of request (process, method, route, status, addresses): its attributes and span template,
    and the durations of this poll's requests of that kind."""

    __slots__ = (
        "attributes",
        "durations",
        "error",
        "filtered",
        "folded",
        "ignored",
        "last_end",
        "no_response",
        "sampled_away",
        "template",
        "tgid",
    )

    def __init__(
        self,
        tgid: int,
        attributes: tuple[Attribute, ...],
        error: bool,
        no_response: bool,
        template: bytes | None,
        *,
        folded: bool = False,
        filtered: bool = False,
    ) -> None:
        self.tgid = tgid
        self.attributes = attributes
        self.error = error
        self.no_response = no_response
        self.template = template
        self.folded = folded  # a 404 reported under the one route /**
        self.filtered = filtered  # a request to one of red.ignored_routes: counted, nothing more
        self.ignored = 0  # this poll's requests of a filtered kind
        self.sampled_away = 0  # this poll's spans red.sampling did not keep
        self.durations: list[int] = []
        self.last_end = 0


_UNKNOWN = _Kind(0, (), False, False, None)  # not a traced process (any more)
_IGNORED = _Kind(0, (), False, False, None)  # not a request after all


class RedEngine:
    """Component (see coral_ebpf/agent/component.py) producing HTTP RED data with the BCC probe."""

    name = "red"

    def __init__(
        self,
        settings: RedSettings,
        consumer: Consumer,
        state_dir: Path,
        hostname: str | None = None,
        probe_factory: Callable[[Callable[[list[bytes]], None]], HttpRedProbe] | None = None,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._state_dir = state_dir
        self._hostname = hostname or socket.gethostname()
        self._probe_factory = probe_factory or (
            lambda handler: HttpRedProbe(state_dir, settings.probe_config(), handler)
        )
        self._probe: HttpRedProbe | None = None
        self._lock = threading.RLock()
        self._export_lock = threading.Lock()
        self._poll_lock = threading.Lock()  # BCC buffers are not safe to consume from two threads
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._services: dict[int, ServiceInfo] = {}
        self._departed: dict[int, ServiceInfo] = {}  # exited, their data not yet exported
        self._routes: dict[int, RouteResolver] = {}
        self._ignored = IgnoredRoutes(settings.ignored_routes)
        # Per traced process: requests ignored, 404s folded, spans sampled away (status "services").
        self._service_counts: dict[int, dict[str, int]] = {}
        self._sampler = SpanSampler(settings.sampling)
        self._kinds: dict[bytes, _Kind] = {}
        self._event_size = event_size(settings.path_max)
        self._sockets = SocketResolver(self._hostname)
        self._aggregator = DurationAggregator(settings.temporality, time.time_ns())
        self._spans: deque[SpanRecord] = deque()
        self._clock_offset = time.time_ns() - time.monotonic_ns()
        self._state = "created"
        self._since = time.time()
        self._error = ""
        self._retry_at = 0.0
        self._stats = {
            "requests": 0,
            "errors": 0,
            "no_response": 0,
            "ignored_requests": 0,
            "not_found_folded": 0,
            "sampled_away_spans": 0,
            "unknown_process": 0,
            "undecodable_events": 0,
            "dropped_spans": 0,
            "exported_points": 0,
            "exported_spans": 0,
            "export_retries": 0,
            "export_failures": 0,
        }
        self._last_export = 0.0

    # -- Component -------------------------------------------------------------------------
    def start(self) -> None:
        probe = self._probe_factory(self._on_records)
        try:
            probe.load()
        except CoralError as exc:
            self._set_state("failed", str(exc))
            raise
        self._probe = probe
        with self._lock:
            probe.set_targets(self._services)
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._poll_loop, name="red-poll", daemon=True),
            threading.Thread(target=self._export_loop, name="red-export", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._set_state("running")
        log.info(
            "RED engine started",
            extra={"fields": {"transport": probe.transport, "services": len(self._services)}},
        )

    def stop(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._stop.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        if self._probe is not None:
            try:
                self._drain()
                self._retry_at = 0.0
                self.export_now()  # one last attempt; what the consumer refuses now is lost
            finally:
                self._probe.close()
                self._probe = None
        self._set_state("stopped")

    def status(self) -> dict[str, Any]:
        with self._lock:
            services = [
                {
                    "pid": info.entry.pid,
                    "name": info.entry.name,
                    "rule": str(info.entry.rule or ""),
                    "instance_id": info.entry.instance_id(self._hostname),
                    "ports": list(info.entry.ports),
                    "routes": self._routes[pid].route_count if pid in self._routes else 0,
                    **self._service_counts.get(pid, dict.fromkeys(SERVICE_COUNTS, 0)),
                }
                for pid, info in sorted(self._services.items())
            ]
            status: dict[str, Any] = {
                "state": self._state,
                "since": self._since,
                "engine": "bcc",
                "transport": self._probe.transport if self._probe else "",
                "services": services,
                "temporality": self._settings.temporality,
                "pending_series": len(self._aggregator),
                "pending_spans": len(self._spans),
                "last_export": self._last_export,
                **self._stats,
            }
            status["routes_overflowed"] = sum(r.overflowed for r in self._routes.values())
            status["segments_capped"] = sum(r.segments_capped for r in self._routes.values())
        if self._error:
            status["error"] = self._error
        if self._probe is not None:
            status["kernel"] = self._probe.counters()
        return status

    # -- targets ---------------------------------------------------------------------------
    def set_route_settings(self, settings: RedSettings) -> None:
        """Take the live keys (`reload.LIVE_RED`: routes, ignored routes, 404 folding, caps, sampling)
        from `settings` (a config reload): every service's route table starts again with them."""
        with self._lock:
            self._settings = replace(
                self._settings,
                routes=settings.routes,
                unmatched_routes=settings.unmatched_routes,
                max_routes_per_service=settings.max_routes_per_service,
                max_path_segment_cardinality=settings.max_path_segment_cardinality,
                fold_not_found=settings.fold_not_found,
                ignored_routes=settings.ignored_routes,
                sampling=settings.sampling,
            )
            self._ignored = IgnoredRoutes(self._settings.ignored_routes)
            self._sampler = SpanSampler(self._settings.sampling)
            for pid in self._routes:
                self._routes[pid] = self._new_resolver()
            self._kinds.clear()  # cached kinds carry routes of the old tables

    def _new_resolver(self) -> RouteResolver:
        settings = self._settings
        return RouteResolver(
            settings.routes,
            settings.unmatched_routes,
            settings.max_routes_per_service,
            fold_not_found=settings.fold_not_found,
            max_segment_cardinality=settings.max_path_segment_cardinality,
        )

    def set_targets(self, entries: Iterable[ServiceEntry]) -> None:
        """Trace exactly these processes (discovery's current services)."""
        wanted = {entry.pid: entry for entry in entries}
        with self._lock:
            for pid in list(self._services):
                current = self._services[pid].entry
                entry = wanted.get(pid)
                if entry is None or entry.start_time != current.start_time:
                    self._departed[pid] = self._services.pop(pid)
                    self._routes.pop(pid, None)
                    self._service_counts.pop(pid, None)
                    self._sockets.forget(pid)
            for pid, entry in wanted.items():
                known = self._services.get(pid)
                if known is not None and (known.entry.name, known.entry.namespace) == (entry.name, entry.namespace):
                    if known.entry != entry:
                        known.entry = entry  # new listeners: keep the resource, refresh the ports
                        self._sockets.forget(pid)
                    continue
                # New, or renamed (a `services:` reload, a port selector): a new resource, the same routes.
                self._services[pid] = ServiceInfo.from_entry(entry, self._hostname)
                self._sockets.forget(pid)
                log.info("service traced", extra={"fields": {"engine": "bcc", **service_fields(entry)}})
                if pid not in self._routes:
                    self._routes[pid] = self._new_resolver()
            self._kinds.clear()
            if self._probe is not None:
                self._probe.set_targets(self._services)

    # -- events ----------------------------------------------------------------------------
    def _on_records(self, records: list[bytes]) -> None:
        """The events of one poll, raw. This runs once per request, so it decodes nothing it has seen:
        attributes come from a cache keyed by the event's attribute bytes, and durations are
        gathered per series and folded into histograms once per poll."""
        offset = self._clock_offset
        times = TIMES.unpack_from
        size = self._event_size
        touched: list[_Kind] = []
        unknown = undecodable = 0
        filtered: list[_Kind] = []
        with self._lock:
            kinds = self._kinds
            spans = self._spans
            sampler = self._sampler
            keeps_all, keep_errors, slow_ns, draw = (
                sampler.keeps_all,
                sampler.keep_errors,
                sampler.slow_ns,
                sampler.draw,
            )
            for record in records:
                if len(record) < size:
                    undecodable += 1
                    continue
                key = attributes_key(record)
                kind = kinds.get(key)
                if kind is None:
                    kind = self._classify(record, key)
                if kind is _UNKNOWN:
                    unknown += 1
                    continue
                if kind is _IGNORED:
                    continue
                if kind.filtered:
                    if not kind.ignored:
                        filtered.append(kind)
                    kind.ignored += 1
                    continue
                start, end = times(record)
                durations = kind.durations
                if not durations:
                    touched.append(kind)
                duration = end - start if end > start else 0
                durations.append(duration)
                kind.last_end = end
                if kind.template is not None:
                    if keeps_all or (keep_errors and kind.error) or duration >= slow_ns:
                        spans.append((kind.tgid, start + offset, end + offset, kind.template, b""))
                    elif (trace_id := draw()) is not None:
                        spans.append((kind.tgid, start + offset, end + offset, kind.template, trace_id))
                    else:
                        kind.sampled_away += 1
            stats = self._stats
            for kind in touched:
                count = len(kind.durations)
                self._aggregator.record_ns(kind.tgid, kind.attributes, kind.durations, kind.last_end + offset)
                kind.durations = []
                stats["requests"] += count
                if kind.error:
                    stats["errors"] += count
                    if kind.no_response:
                        stats["no_response"] += count
                if kind.folded:
                    self._count(kind.tgid, "not_found_folded", count)
                if kind.sampled_away:
                    self._count(kind.tgid, "sampled_away_spans", kind.sampled_away)
                    kind.sampled_away = 0
            for kind in filtered:
                self._count(kind.tgid, "ignored_requests", kind.ignored)
                kind.ignored = 0
            stats["unknown_process"] += unknown
            stats["undecodable_events"] += undecodable
            overflow = len(spans) - self._settings.max_pending_spans
            for _ in range(max(0, overflow)):
                spans.popleft()
            if overflow > 0:
                stats["dropped_spans"] += overflow

    def _count(self, tgid: int, key: str, count: int) -> None:
        """Add to an engine-wide figure and to the process's own (the caller holds the lock)."""
        self._stats[key] += count
        if tgid in self._services:  # not one that left during this poll: its entry is gone
            counts = self._service_counts.setdefault(tgid, dict.fromkeys(SERVICE_COUNTS, 0))
            counts[key] += count

    def _classify(self, record: bytes, key: bytes) -> _Kind:
        """Attributes, error flag and span template of a kind of request; cached, as most requests repeat one."""
        kind = self._kind_of(decode_event(record, self._settings.path_max))
        if len(self._kinds) >= KIND_CACHE_SIZE:
            self._kinds.clear()
        self._kinds[key] = kind
        return kind

    def _kind_of(self, event: RedEvent | None) -> _Kind:
        if event is None:
            return _UNKNOWN
        info = self._services.get(event.tgid)
        routes = self._routes.get(event.tgid)
        if info is None or routes is None:
            return _UNKNOWN
        if event.closed_without_response and event.flags & FLAG_INFERRED:
            return _IGNORED  # an fd we never saw accepted may not be a socket: its close proves nothing
        if self._ignored and self._ignored.matches(normalize_target(event.target)):
            return _Kind(event.tgid, (), False, False, None, filtered=True)
        status = event.status
        route = routes.route(event.target, event.truncated, status)
        address, port = self._sockets.server(info.entry, event.listen_fd, event.inferred_fd, event.peer_address)
        attributes: tuple[Attribute, ...] = (
            ("http.request.method", event.method),
            ("http.response.status_code", status),
            ("http.route", route),
            ("url.scheme", "http"),
            ("server.address", address),
            ("server.port", port),
            ("service.name", info.entry.name),
        )
        if info.namespace:
            attributes += (("service.namespace", info.namespace),)
        error = status == 0 or status >= 500
        template = None
        if self._settings.traces:
            template = span_template(
                f"{event.method} {route}",
                error,
                (
                    ("http.request.method", event.method),
                    ("http.response.status_code", status),
                    ("url.path", normalize_target(event.target)),
                    ("url.scheme", "http"),
                    ("http.route", route),
                    ("client.address", event.peer_address),
                    ("server.address", address),
                    ("server.port", port),
                ),
            )
        folded = status == NOT_FOUND and route == WILDCARD_ROUTE
        return _Kind(event.tgid, attributes, error, status == 0, template, folded=folded)

    # -- loops -----------------------------------------------------------------------------
    def _drain(self) -> None:
        with self._poll_lock:
            if self._probe is not None:
                self._probe.poll()

    def _poll_loop(self) -> None:
        _lower_priority()
        while not self._stop.wait(POLL_INTERVAL):
            try:
                self._drain()
            except Exception as exc:  # never let one bad event stop the engine
                log.exception("RED event polling failed", extra={"fields": {"error": str(exc)}})

    def _export_loop(self) -> None:
        _lower_priority()
        interval = self._settings.export_interval
        next_export = time.monotonic() + interval
        while not self._stop.wait(max(0.0, min(next_export, self._retry_at or next_export) - time.monotonic())):
            now = time.monotonic()
            if now < next_export and (self._retry_at == 0.0 or now < self._retry_at):
                continue
            if now >= next_export:
                next_export = now + interval
            try:
                self._drain()
                self.export_now()
            except Exception as exc:
                log.exception("RED export failed", extra={"fields": {"error": str(exc)}})

    def flush(self) -> None:
        """Read every event waiting in the kernel buffer and export everything now."""
        self._drain()
        self.export_now()

    def export_now(self) -> None:
        """Hand everything aggregated so far to the consumer (the export thread calls this every interval)."""
        with self._export_lock:
            if self._retry_at and time.monotonic() < self._retry_at:
                return
            self._retry_at = 0.0
            self._clock_offset = time.time_ns() - time.monotonic_ns()
            with self._lock:
                taken_at = time.time_ns()
                series = self._aggregator.take(taken_at)
                resources = {pid: info.resource for pid, info in {**self._departed, **self._services}.items()}
                spans = list(self._spans)
                self._spans.clear()
            self._export_metrics(series, resources, taken_at)
            self._export_spans(spans, resources)
            self._last_export = time.time()
            if not self._retry_at:
                with self._lock:
                    self._departed.clear()

    def _refused(self, exc: QueueFullError | ConsumerUnavailableError) -> None:
        self._stats["export_retries"] += 1
        self._retry_at = time.monotonic() + max(0.05, exc.retry_after)
        log.info("consumer refused RED data, will retry", extra={"fields": {"retry_after": exc.retry_after}})

    def _export_metrics(self, series: dict[Any, Any], resources: dict[int, list[Attribute]], now_ns: int) -> None:
        if not series:
            return
        request = metrics_request(series, resources, self._settings.temporality, now_ns)
        try:
            self._consumer.consume_metrics(request)
        except (QueueFullError, ConsumerUnavailableError) as exc:
            self._refused(exc)
            with self._lock:
                self._aggregator.give_back(series)
            return
        except Exception as exc:
            self._stats["export_failures"] += 1
            log.error("consumer rejected RED metrics", extra={"fields": {"error": str(exc)}})
            return
        self._stats["exported_points"] += sum(1 for h in series.values() if h.count)

    def _export_spans(self, spans: list[SpanRecord], resources: dict[int, list[Attribute]]) -> None:
        for start in range(0, len(spans), SPANS_PER_REQUEST):
            batch = spans[start : start + SPANS_PER_REQUEST]
            if self._retry_at:
                self._requeue(spans[start:])
                return
            try:
                if isinstance(self._consumer, SerializedTracesConsumer):
                    self._consumer.consume_traces_serialized(encoded_traces_request(batch, resources))
                else:
                    self._consumer.consume_traces(traces_request(batch, resources))
            except (QueueFullError, ConsumerUnavailableError) as exc:
                self._refused(exc)
                self._requeue(spans[start:])
                return
            except Exception as exc:
                self._stats["export_failures"] += 1
                log.error("consumer rejected RED spans", extra={"fields": {"error": str(exc)}})
                continue
            self._stats["exported_spans"] += len(batch)

    def _requeue(self, spans: list[SpanRecord]) -> None:
        with self._lock:
            self._spans.extendleft(reversed(spans))
            overflow = len(self._spans) - self._settings.max_pending_spans
            for _ in range(max(0, overflow)):
                self._spans.popleft()
                self._stats["dropped_spans"] += 1

    def _set_state(self, state: str, error: str = "") -> None:
        self._state = state
        self._since = time.time()
        self._error = error
