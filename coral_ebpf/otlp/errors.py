"""Every failure of an export request, mapped to its HTTP status and gRPC code in this one place.

Transports raise (or catch from the consumer) an exception and ask `reply_for` what to answer;
no handler picks a status code itself. The mapping follows the OTLP specification and the
OpenTelemetry Collector (`receiver/otlpreceiver/internal/errors`):

| failure                        | HTTP | gRPC               | client retries |
|--------------------------------|------|--------------------|----------------|
| malformed body                 | 400  | INVALID_ARGUMENT   | no             |
| body over `otlp.max_body_bytes`| 413  | RESOURCE_EXHAUSTED | no (no RetryInfo) |
| unknown Content-Type/-Encoding | 415  | (HTTP only)        | no             |
| body not sent in time          | 408  | (HTTP only)        | yes            |
| write queue full               | 429  | RESOURCE_EXHAUSTED + RetryInfo | yes, after Retry-After |
| too many calls or connections  | 429  | RESOURCE_EXHAUSTED + RetryInfo | yes, after Retry-After |
| pipeline stopping or broken    | 503  | UNAVAILABLE + RetryInfo        | yes, after Retry-After |
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status

from coral_ebpf.consumer import ConsumerUnavailableError, QueueFullError

log = logging.getLogger(__name__)


class ReceiverError(Exception):
    """A request the receiver refuses; the message is sent back to the client verbatim."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedRequestError(ReceiverError):
    """The body is not a valid OTLP message in the declared encoding (400 / INVALID_ARGUMENT)."""


class BodyTooLargeError(ReceiverError):
    """The body, compressed or decompressed, is larger than `otlp.max_body_bytes` (413 / RESOURCE_EXHAUSTED)."""


class UnsupportedMediaTypeError(ReceiverError):
    """Unknown Content-Type or Content-Encoding (415)."""


class BodyTimeoutError(ReceiverError):
    """The client did not send its whole body in time (408); it holds a request slot meanwhile."""


class TooBusyError(ReceiverError):
    """More concurrent calls (gRPC) or connections (HTTP) than the listener takes; retry later."""


@dataclass(frozen=True)
class ErrorReply:
    """What to answer for a failed request, in both transports' terms."""

    http_status: int
    grpc_code: grpc.StatusCode
    message: str
    retry_after: float | None = None  # seconds; set only when the client should retry

    @property
    def retry_after_header(self) -> str | None:
        """`Retry-After` takes whole seconds (RFC 9110); round up so the client never comes back early."""
        if self.retry_after is None:
            return None
        return str(max(1, math.ceil(self.retry_after)))

    def grpc_trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        """RetryInfo for gRPC clients: as status details (Go SDK, Collector) and as its own key (Python SDK)."""
        if self.retry_after is None:
            return ()
        delay = Duration()
        delay.FromNanoseconds(int(self.retry_after * 1e9))
        retry_info = RetryInfo(retry_delay=delay)
        detail = AnyMessage()
        detail.Pack(retry_info)
        status = Status(code=self.grpc_code.value[0], message=self.message, details=[detail])
        return (
            ("grpc-status-details-bin", status.SerializeToString()),
            ("google.rpc.retryinfo-bin", retry_info.SerializeToString()),
        )

    def status_message(self) -> Status:
        """The google.rpc.Status the OTLP/HTTP spec asks for in an error response body."""
        return Status(code=self.grpc_code.value[0], message=self.message)


def reply_for(error: BaseException, retry_after_floor: float) -> ErrorReply:
    """Map any failure of an export request to its reply.

    `retry_after_floor` is `otlp.retry_after`: the least delay a client is asked to wait,
    raised to the pipeline's own estimate when that is longer.
    """
    if isinstance(error, MalformedRequestError):
        return ErrorReply(400, grpc.StatusCode.INVALID_ARGUMENT, error.message)
    if isinstance(error, BodyTooLargeError):
        return ErrorReply(413, grpc.StatusCode.RESOURCE_EXHAUSTED, error.message)
    if isinstance(error, UnsupportedMediaTypeError):
        return ErrorReply(415, grpc.StatusCode.INVALID_ARGUMENT, error.message)
    if isinstance(error, BodyTimeoutError):
        return ErrorReply(408, grpc.StatusCode.DEADLINE_EXCEEDED, error.message)
    if isinstance(error, TooBusyError):
        return ErrorReply(429, grpc.StatusCode.RESOURCE_EXHAUSTED, error.message, retry_after_floor)
    if isinstance(error, QueueFullError):
        delay = max(retry_after_floor, error.retry_after)
        return ErrorReply(429, grpc.StatusCode.RESOURCE_EXHAUSTED, f"write queue full: {error}", delay)
    if isinstance(error, ConsumerUnavailableError):
        delay = max(retry_after_floor, error.retry_after)
        return ErrorReply(503, grpc.StatusCode.UNAVAILABLE, f"pipeline unavailable: {error}", delay)
    # A bug downstream must not drop data the client still holds: answer retryable, like the
    # Collector does for errors not marked permanent, and log it loudly for a person to fix.
    log.error("consumer failed unexpectedly; asking the client to retry", exc_info=error)
    return ErrorReply(
        503,
        grpc.StatusCode.UNAVAILABLE,
        f"internal error in the pipeline ({type(error).__name__}); retry later",
        retry_after_floor,
    )
