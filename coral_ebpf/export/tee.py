"""`ExportingConsumer`: hands every request to the next consumer, then queues it for export.

It sits in front of the transform, so everything the agent accepts — from SDKs, from Beyla, from
the built-in engine — is exported, and only what was accepted (a request the storage refused
is retried by its sender and queued when it is accepted). With the queue policy `refuse` a
full queue refuses the request before it is stored: the sender gets 429 / RESOURCE_EXHAUSTED
and retries, which throttles ingestion to what the upstream takes.
"""

from __future__ import annotations

import logging

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from coral_ebpf.consumer import Consumer, ConsumeResult, QueueFullError, SerializedTracesConsumer
from coral_ebpf.export.queue import DiskQueue, QueueFull

log = logging.getLogger(__name__)


class ExportingConsumer:
    def __init__(self, inner: Consumer, queue: DiskQueue, retry_after: float = 1.0) -> None:
        self._inner = inner
        self._queue = queue
        self._retry_after = retry_after
        self.queue_errors = 0

    def _admit(self, size: int) -> None:
        if self._queue.would_refuse(size):
            raise QueueFullError("the export queue is full (export.otlp.queue_full: refuse); retry later",
                                 retry_after=self._retry_after)  # fmt: skip

    def _enqueue(self, signal: str, body: bytes) -> None:
        try:
            self._queue.put(signal, body)
        except QueueFull as exc:  # lost the race with another request for the last bytes
            self.queue_errors += 1
            log.warning("request stored but not queued for export", extra={"fields": {"error": str(exc)}})
        except OSError as exc:
            self.queue_errors += 1
            log.error("cannot write to the export queue", extra={"fields": {"error": str(exc)}})

    def consume_traces(self, request: ExportTraceServiceRequest) -> ConsumeResult:
        body = request.SerializeToString()
        self._admit(len(body))
        result = self._inner.consume_traces(request)
        self._enqueue("traces", body)
        return result

    def consume_traces_serialized(self, body: bytes) -> ConsumeResult:
        self._admit(len(body))
        if isinstance(self._inner, SerializedTracesConsumer):
            result = self._inner.consume_traces_serialized(body)
        else:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            result = self._inner.consume_traces(request)
        self._enqueue("traces", body)
        return result

    def consume_metrics(self, request: ExportMetricsServiceRequest) -> ConsumeResult:
        body = request.SerializeToString()
        self._admit(len(body))
        result = self._inner.consume_metrics(request)
        self._enqueue("metrics", body)
        return result

    def consume_logs(self, request: ExportLogsServiceRequest) -> ConsumeResult:
        body = request.SerializeToString()
        self._admit(len(body))
        result = self._inner.consume_logs(request)
        self._enqueue("logs", body)
        return result
