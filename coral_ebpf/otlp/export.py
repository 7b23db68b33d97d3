"""The transport-independent path of one export request: decode, hand to the consumer, answer.

Both transports call `Exporter.handle` on a worker thread. A request is acknowledged only
when the consumer returned: every failure before that becomes an `ErrorReply`, so nothing a
client was told is stored can be lost here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError, Message

from coral_ebpf.consumer import Consumer
from coral_ebpf.otlp.caps import check_request
from coral_ebpf.otlp.encoding import Encoding, decode, trace_skeleton
from coral_ebpf.otlp.errors import ErrorReply, MalformedRequestError, reply_for
from coral_ebpf.otlp.settings import RequestCaps
from coral_ebpf.otlp.signals import SignalHandler
from coral_ebpf.otlp.stats import ReceiverStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    """Either the response to send (success, maybe partial) or the error to answer with."""

    response: Message | None = None
    error: ErrorReply | None = None


class Exporter:
    def __init__(
        self, consumer: Consumer, stats: ReceiverStats, retry_after_floor: float, caps: RequestCaps | None = None
    ) -> None:
        self._consumer = consumer
        self._stats = stats
        self._retry_after_floor = retry_after_floor
        self._caps = caps or RequestCaps()

    def handle(
        self,
        transport: str,
        handler: SignalHandler,
        *,
        payload: Callable[[], bytes],
        encoding: Encoding,
        bytes_in: int,
        error_key: Callable[[ErrorReply], str],
    ) -> ExportResult:
        """Run one request; `payload` returns the (decompressed) body or raises a ReceiverError."""
        items = 0
        try:
            body = payload()
            if encoding is Encoding.PROTOBUF and handler.takes_serialized(self._consumer):
                items = handler.count_serialized(body)
                check_request(handler.name, trace_skeleton(body), items, self._caps)
                try:
                    result = handler.consume_serialized(self._consumer, body)
                except DecodeError as exc:
                    raise MalformedRequestError(
                        f"body is not a valid protobuf {handler.request_type.DESCRIPTOR.name}: {exc}"
                    ) from None
            else:
                request = decode(body, handler.request_type, encoding)
                items = handler.count_items(request)
                check_request(handler.name, request, items, self._caps)
                result = handler.consume(self._consumer, request)
        except Exception as exc:  # every failure is answered here; none reaches the transport
            reply = reply_for(exc, self._retry_after_floor)
            log.debug(
                "export refused",
                extra={
                    "fields": {
                        "transport": transport,
                        "signal": handler.name,
                        "code": error_key(reply),
                        "reason": reply.message,
                    }
                },
            )
            self._stats.record(
                transport,
                handler.name,
                bytes_in=bytes_in,
                refused=items,
                error=error_key(reply),
            )
            return ExportResult(error=reply)
        rejected = min(max(result.rejected, 0), items)
        message = result.message
        if rejected and not message:
            message = f"{rejected} of {items} {handler.item_name} rejected"
        self._stats.record(transport, handler.name, bytes_in=bytes_in, accepted=items - rejected, rejected=rejected)
        return ExportResult(response=handler.response(rejected, message))
