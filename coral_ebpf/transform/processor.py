"""`TransformProcessor`: the receiver's `Consumer`, turning OTLP requests into storage batches.

A request is accepted or refused as a whole: it becomes one `Batch`, answered only once
storage has it durably (in its spool, synced); when the write queue is full nothing of it is
kept (not even cumulative-histogram state), so the sender's
retry is processed as if it were the first attempt. Items that cannot be used are counted
as rejected with a reason (OTLP partial success); the rest is stored.

Logs are accepted and counted, not stored (the agent has no log table, like the Go agent).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from coral_ebpf.consumer import ConsumeResult, ConsumerUnavailableError, QueueFullError
from coral_ebpf.storage.schema import RESOURCES, SPANS
from coral_ebpf.storage.series import stored_series
from coral_ebpf.storage.writer import (
    Batch,
    Storage,
    StorageClosedError,
    StorageUnavailableError,
    WriteQueueFullError,
)
from coral_ebpf.transform.door import DEFAULT_MAX_AHEAD, TimeWindow
from coral_ebpf.transform.histograms import DeltaTracker, Staging
from coral_ebpf.transform.metrics import MetricsFlattener
from coral_ebpf.transform.resource import resource_table
from coral_ebpf.transform.spans import SpanFlattener, SpanRows
from coral_ebpf.transform.telemetry_sources import SourceTracker

log = logging.getLogger(__name__)

_MAX_MESSAGE = 1000
# How long start waits for the spool replay before reading the stored series (the restart baseline).
REPLAY_WAIT = 60.0


def rejection_message(reasons: Mapping[str, int]) -> str:
    """One line naming each reason with its count, most frequent first."""
    parts = [f"{reason} ({count})" for reason, count in Counter(reasons).most_common()]
    text = "; ".join(parts)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


class TransformProcessor:
    """Implements `coral_ebpf.consumer.Consumer` and the `Component` protocol."""

    name = "transform"

    def __init__(
        self,
        storage: Storage,
        *,
        agent_id: str,
        retry_after: float = 1.0,
        max_time_ahead: float = DEFAULT_MAX_AHEAD,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._retry_after = retry_after
        self._max_time_ahead = max_time_ahead
        self._clock = wall_clock
        self._spans = SpanFlattener(agent_id)
        self._deltas = DeltaTracker()
        self._metrics = MetricsFlattener(agent_id, self._deltas)
        self._metrics_lock = threading.Lock()
        self._counters_lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._delta_outcomes: Counter[str] = Counter()
        self._ignored: Counter[str] = Counter()
        self._warned_ignored: set[str] = set()
        self.sources = SourceTracker(wall_clock)
        self._running = False
        self._state = "created"
        self._since = wall_clock()

    # -- Component ---------------------------------------------------------------------------

    def start(self) -> None:
        """Read which series the previous run stored (for the first-point rule); needs a started Storage."""
        if not self._storage.wait_replayed(REPLAY_WAIT):
            log.warning(
                "the spool replay is not finished: series only in the spool count as new",
                extra={"fields": {"waited_s": REPLAY_WAIT}},
            )
        with self._storage.reader() as reader:
            self._deltas.stored_before = stored_series(reader)
        self._running = True
        self._state, self._since = "running", self._clock()

    def stop(self, timeout: float) -> None:
        self._running = False
        self._state, self._since = "stopped", self._clock()

    def status(self) -> dict[str, Any]:
        with self._counters_lock:
            counters = dict(self._counters)
            outcomes = dict(self._delta_outcomes)
            ignored = dict(self._ignored.most_common(20))
        return {
            "state": self._state,
            "since": self._since,
            **counters,
            "histogram_series_tracked": len(self._deltas),
            "cumulative_points": outcomes,
            "metrics_not_stored": ignored,
            "sources": self.sources.snapshot(),
        }

    def last_seen(self, sdk_name: str) -> float | None:
        """Unix time OTLP data last arrived from senders with this `telemetry.sdk.name`."""
        return self.sources.last_seen(sdk_name)

    # -- Consumer ----------------------------------------------------------------------------

    def _window(self) -> TimeWindow:
        """Times a request may carry: after 1970 and at most `max_time_ahead` after the agent's clock."""
        return TimeWindow.now(self._max_time_ahead, self._clock)

    def _check_running(self) -> None:
        if not self._running or not self._storage.accepting:
            raise ConsumerUnavailableError("coral-ebpf is not accepting data (stopping or storage unavailable)")

    @contextlib.contextmanager
    def _storage_refusals(self) -> Iterator[None]:
        """Storage's refusals as the consumer errors the receiver answers 429 / 503 for."""
        try:
            yield
        except WriteQueueFullError as exc:
            self._count(requests_refused_queue_full=1)
            raise QueueFullError(f"{exc}; retry later", retry_after=self._retry_after) from exc
        except StorageUnavailableError as exc:
            self._count(requests_refused_storage_unavailable=1)
            raise ConsumerUnavailableError(str(exc), retry_after=max(self._retry_after, 5.0)) from exc
        except StorageClosedError as exc:
            raise ConsumerUnavailableError(str(exc)) from exc

    def _submit(self, batch: Batch) -> None:
        """Hand `batch` to storage and return once it is durable (the request may then be acknowledged)."""
        with self._storage_refusals():
            self._storage.submit(batch)

    def _count(self, **amounts: int) -> None:
        with self._counters_lock:
            self._counters.update(amounts)

    def consume_traces(self, request: ExportTraceServiceRequest) -> ConsumeResult:
        self._check_running()
        return self._store_spans(self._spans.flatten(request, self._window()))

    def consume_traces_serialized(self, body: bytes) -> ConsumeResult:
        """`consume_traces` for a protobuf-encoded ExportTraceServiceRequest, without decoding it first.

        The fast path for a receiver holding the raw body (OTLP/HTTP protobuf, or gRPC with an
        identity deserializer): it saves a full decode and re-encode (~1.5 us of ~10 per span).
        Raises google.protobuf.message.DecodeError when the body is not such a request (HTTP 400
        / INVALID_ARGUMENT); a span whose attributes do not decode is rejected on its own.
        """
        self._check_running()
        return self._store_spans(self._spans.flatten_serialized(body, self._window()))

    def _store_spans(self, rows: SpanRows) -> ConsumeResult:
        self.sources.arrived(rows.per_sdk, "spans")
        if rows.table.num_rows:
            self._submit(Batch({SPANS.name: rows.table, RESOURCES.name: resource_table(rows.resources)}))
        self.sources.accepted(rows.per_sdk, "spans")
        self._count(spans_accepted=rows.table.num_rows, spans_rejected=rows.rejected)
        if rows.rejected:
            return ConsumeResult(rows.rejected, rejection_message(rows.reasons))
        return ConsumeResult()

    def consume_metrics(self, request: ExportMetricsServiceRequest) -> ConsumeResult:
        self._check_running()
        with self._metrics_lock:
            staging = Staging()
            rows = self._metrics.flatten(request, staging, self._window())
            self.sources.arrived(rows.per_sdk, "metric_points")
            stored = sum(table.num_rows for table in rows.tables.values())
            seq = None
            if stored:
                # Appended under the lock so the histogram state moves in the order batches are
                # written; the fsync is waited for outside it, shared with other requests.
                with self._storage_refusals():
                    seq = self._storage.append(Batch({**rows.tables, RESOURCES.name: resource_table(rows.resources)}))
            self._deltas.commit(staging)
        if seq is not None:
            with self._storage_refusals():
                self._storage.wait_durable(seq)
        self.sources.accepted(rows.per_sdk, "metric_points")
        self._count(
            metric_points_received=rows.points,
            metric_points_rejected=rows.rejected,
            histogram_rows_stored=stored,
        )
        with self._counters_lock:
            self._delta_outcomes.update(staging.outcomes)
            self._ignored.update(rows.ignored)
            new_names = [name for name in rows.ignored if name not in self._warned_ignored]
            self._warned_ignored.update(new_names)
        for name in new_names:
            log.info("metric accepted but not stored (only histograms are kept)", extra={"fields": {"metric": name}})
        if rows.rejected:
            return ConsumeResult(rows.rejected, rejection_message(rows.reasons))
        return ConsumeResult()

    def consume_logs(self, request: ExportLogsServiceRequest) -> ConsumeResult:
        self._check_running()
        per_sdk: Counter[str] = Counter()
        for resource_logs in request.resource_logs:
            sdk = ""
            for attribute in resource_logs.resource.attributes:
                if attribute.key == "telemetry.sdk.name":
                    sdk = attribute.value.string_value
            per_sdk[sdk] += sum(len(scope.log_records) for scope in resource_logs.scope_logs)
        self.sources.arrived(per_sdk, "log_records")
        self.sources.accepted(per_sdk, "log_records")
        self._count(log_records_accepted_not_stored=sum(per_sdk.values()))
        return ConsumeResult()
