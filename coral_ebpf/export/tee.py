"""`ExportingConsumer`: hands every request to the next consumer, then queues it for export.

It sits in front of the transform, so everything the agent accepts — from SDKs, from Beyla, from
the built-in engine — is exported, and only what was accepted: the request is staged in the
queue before it is stored and committed after (a request the storage refused is discarded; its
sender retries and it is queued when accepted). The answer waits for both syncs, which overlap.
With the queue policy `refuse` a full queue refuses the request before it is stored: the sender
gets 429 / RESOURCE_EXHAUSTED and retries, which throttles ingestion to what the upstream takes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from coral_ebpf.consumer import Consumer, ConsumeResult, QueueFullError, SerializedTracesConsumer
from coral_ebpf.export.queue import DiskQueue, QueueFull, Staged

log = logging.getLogger(__name__)


class ExportingConsumer:
    def __init__(self, inner: Consumer, queue: DiskQueue, retry_after: float = 1.0) -> None:
        self._inner = inner
        self._queue = queue
        self._retry_after = retry_after
        self.queue_errors = 0

    def _through(self, signal: str, body: bytes, consume: Callable[[], ConsumeResult]) -> ConsumeResult:
        """Stage `body` for export, let the next consumer store it, then commit (or discard) it.

        Staging first lets the export queue's sync run while the storage syncs its own copy.
        """
        if self._queue.would_refuse(len(body)):
            raise QueueFullError(
                "the export queue is full (export.otlp.queue_full: refuse); retry later", retry_after=self._retry_after
            )
        staged = self._stage(signal, body)
        try:
            result = consume()
        except BaseException:
            if staged is not None:
                self._queue.discard(staged)
            raise
        if staged is not None:
            try:
                self._queue.commit(staged)
            except OSError as exc:
                self.queue_errors += 1
                log.error("cannot sync the export queue", extra={"fields": {"error": str(exc)}})
        return result

    def _stage(self, signal: str, body: bytes) -> Staged | None:
        try:
            return self._queue.stage(signal, body)
        except QueueFull as exc:  # lost the race with another request for the last bytes: refused, not stored
            raise QueueFullError(str(exc), retry_after=self._retry_after) from exc
        except OSError as exc:
            self.queue_errors += 1
            log.error("cannot write to the export queue", extra={"fields": {"error": str(exc)}})
            return None

    def consume_traces(self, request: ExportTraceServiceRequest) -> ConsumeResult:
        return self._through("traces", request.SerializeToString(), lambda: self._inner.consume_traces(request))

    def consume_traces_serialized(self, body: bytes) -> ConsumeResult:
        inner = self._inner
        if isinstance(inner, SerializedTracesConsumer):
            return self._through("traces", body, lambda: inner.consume_traces_serialized(body))

        def parsed() -> ConsumeResult:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            return inner.consume_traces(request)

        return self._through("traces", body, parsed)

    def consume_metrics(self, request: ExportMetricsServiceRequest) -> ConsumeResult:
        return self._through("metrics", request.SerializeToString(), lambda: self._inner.consume_metrics(request))

    def consume_logs(self, request: ExportLogsServiceRequest) -> ConsumeResult:
        return self._through("logs", request.SerializeToString(), lambda: self._inner.consume_logs(request))
