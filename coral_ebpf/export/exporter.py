"""`OtlpExporter`: sends the disk queue's requests upstream, oldest first, on one thread.

Before sending, each resource gets `coral.agent.id` and `host.name` (unless it has them), so
the upstream can tell which host's agent saw the data. A request leaves the queue when the
upstream took it (a partial success counts its rejected items) or refused it for good (counted
as failed); a retryable failure keeps it at the head and waits: the server's Retry-After /
RetryInfo when given, else an exponential back-off from `retry_initial` to `retry_max` with
jitter. Nothing is dropped for age: only the queue's bound drops (policy `drop_oldest`).
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from coral_ebpf.export.client import OtlpClient, Outcome
from coral_ebpf.export.queue import DiskQueue, Entry
from coral_ebpf.export.settings import OtlpExportSettings
from coral_ebpf.export.temporality import Temporality, TemporalityConverter
from coral_ebpf.state import PartState

log = logging.getLogger(__name__)

_REQUESTS = {
    "traces": (ExportTraceServiceRequest, "resource_spans", "scope_spans", "spans"),
    "metrics": (ExportMetricsServiceRequest, "resource_metrics", "scope_metrics", "metrics"),
    "logs": (ExportLogsServiceRequest, "resource_logs", "scope_logs", "log_records"),
}
AGENT_ID_KEY = "coral.agent.id"


def count_items(signal: str, request: Any) -> int:
    _type, resources, scopes, items = _REQUESTS[signal]
    if signal == "metrics":
        total = 0
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    total += len(getattr(metric, kind).data_points) if kind else 0
        return total
    return sum(
        len(getattr(scope, items)) for resource in getattr(request, resources) for scope in getattr(resource, scopes)
    )


class OtlpExporter:
    """The `export` part (a `Component`)."""

    name = "export"

    def __init__(self, settings: OtlpExportSettings, agent_id: str) -> None:
        self.settings = settings
        self.queue = DiskQueue(
            settings.queue_dir, settings.queue_max_bytes, settings.queue_full, fsync=settings.queue_fsync
        )
        self._client = OtlpClient(settings)
        self._temporality = TemporalityConverter(Temporality(settings.temporality))
        self._prepared: tuple[int, bytes, int] | None = None  # (seq, body, items) of the head request
        self._attributes = {AGENT_ID_KEY: agent_id, "host.name": socket.gethostname()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = PartState.CREATED
        self._since = time.time()
        self._lock = threading.Lock()
        self.exported_requests = 0
        self.exported_items = dict.fromkeys(_REQUESTS, 0)
        self.rejected_items = 0
        self.failed_requests = 0
        self.retries = 0
        self.last_error = ""
        self.last_error_at: float | None = None
        self.last_export_at: float | None = None
        self.next_attempt_in = 0.0

    # -- Component ---------------------------------------------------------------------------

    def start(self) -> None:
        self.queue.open()
        if self.queue.recovered_requests:
            log.info(
                "export queue recovered from the previous run",
                extra={"fields": {"requests": self.queue.recovered_requests, "bytes": self.queue.bytes}},
            )
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()
        self._state, self._since = PartState.RUNNING, time.time()

    def stop(self, timeout: float) -> None:
        """Stop sending; what is still queued stays on disk for the next start."""
        self._stop.set()
        self.queue.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        self._client.close()
        self._state, self._since = PartState.STOPPED, time.time()

    # -- sending -----------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self.settings.retry_initial
        while not self._stop.is_set():
            entry = self.queue.oldest(timeout=0.5)
            if entry is None:
                continue
            outcome, items = self._send(entry)
            if outcome.delivered or not outcome.retryable:
                self.queue.remove(entry)
                self._count(entry, outcome, items)
                delay = self.settings.retry_initial
                self.next_attempt_in = 0.0
                continue
            with self._lock:
                self.retries += 1
                self.last_error, self.last_error_at = outcome.error, time.time()
            wait = outcome.retry_after if outcome.retry_after is not None else delay * random.uniform(0.8, 1.2)
            wait = min(max(wait, 0.05), max(self.settings.retry_max, outcome.retry_after or 0.0))
            self.next_attempt_in = wait
            log.warning(
                "upstream export failed; retrying",
                extra={"fields": {"error": outcome.error, "retry_in_s": round(wait, 2), "queued": self.queue.requests}},
            )
            self._stop.wait(wait)
            delay = min(delay * 2, self.settings.retry_max)

    def _send(self, entry: Entry) -> tuple[Outcome, int]:
        prepared = self._prepare(entry)
        if prepared is None:
            return Outcome(False, retryable=False, error="dropped from the queue before sending"), 0
        body, items = prepared
        if items == 0 and entry.signal == "metrics":
            return Outcome(True), 0  # only points the temporality conversion kept as baselines
        return self._client.send(entry.signal, body), items

    def _prepare(self, entry: Entry) -> tuple[bytes, int] | None:
        """The request as sent upstream (tagged, converted) and its item count, made once per entry.

        A retry sends the same bytes: the temporality conversion has per-series state and must see
        each request exactly once.
        """
        if self._prepared is not None and self._prepared[0] == entry.seq:
            return self._prepared[1], self._prepared[2]
        body = self.queue.read(entry)
        if body is None:
            return None
        request = _REQUESTS[entry.signal][0]()
        request.ParseFromString(body)
        self._tag(entry.signal, request)
        if entry.signal == "metrics":
            self._temporality.convert(request)
        items = count_items(entry.signal, request)
        self._prepared = (entry.seq, request.SerializeToString(), items)
        return self._prepared[1], items

    def _tag(self, signal: str, request: Any) -> None:
        for resource_data in getattr(request, _REQUESTS[signal][1]):
            attributes = resource_data.resource.attributes
            present = {kv.key for kv in attributes}
            for key, value in self._attributes.items():
                if key not in present:
                    attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))

    def _count(self, entry: Entry, outcome: Outcome, items: int) -> None:
        with self._lock:
            if outcome.delivered:
                self.exported_requests += 1
                self.exported_items[entry.signal] += items - outcome.rejected
                self.rejected_items += outcome.rejected
                self.last_export_at = time.time()
            else:
                self.failed_requests += 1
                self.last_error, self.last_error_at = outcome.error, time.time()
                log.error(
                    "upstream refused an export request for good; it is dropped",
                    extra={"fields": {"signal": entry.signal, "items": items, "error": outcome.error}},
                )

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        queue = self.queue
        with self._lock:
            return {
                "state": self._state,
                "since": self._since,
                "endpoint": self.settings.endpoint,
                "protocol": self.settings.protocol,
                "exported_requests": self.exported_requests,
                "exported_items": dict(self.exported_items),
                "rejected_items": self.rejected_items,
                "failed_requests": self.failed_requests,
                "retries": self.retries,
                "queue_requests": queue.requests,
                "queue_bytes": queue.bytes,
                "queue_max_bytes": queue.max_bytes,
                "queue_full_policy": queue.policy,
                "queue_fsync": queue.fsync,
                "queue_syncs": queue.syncs,
                "dropped_requests": queue.dropped_requests,
                "dropped_bytes": queue.dropped_bytes,
                "refused_requests": queue.refused_requests,
                "recovered_requests": queue.recovered_requests,
                **self._temporality.status(),
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
                "last_export_at": self.last_export_at,
                "next_attempt_in": round(self.next_attempt_in, 2),
            }
