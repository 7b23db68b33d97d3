"""The OTLP trace wire format: field numbers, two partial views and a span encoder, in this one place.

Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto` and
`opentelemetry/proto/collector/trace/v1/trace_service.proto`; `tests/unit/test_otlp_wire.py` checks each
of them against the official descriptors and round-trips both directions through the official classes.

- `LazyTraceRequest` parses an `ExportTraceServiceRequest` but leaves a span's attributes, events, links,
  status, and each resource and scope as raw bytes (bytes and sub-messages share a wire type). Building a
  Python wrapper for every attribute KeyValue costs ~0.25 us and a span has 10-20 of them; the flattener
  decodes each distinct raw value once instead (`transform/anyvalue.py`).
- `TraceSkeleton` keeps whole spans as bytes: enough to count them (~0.04 us per span against ~0.7 us for
  the full message) while still checking the outer framing.
- `span_head`, `spans_entry_prefix` and `encode_traces_request` write spans without building messages:
  the RED engine sends many alike spans, and writing each one's ids and times in front of a shared,
  pre-encoded remainder costs a few microseconds instead of the tens a message takes.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


class WireType(enum.IntEnum):
    """Protobuf wire types (the low three bits of a tag)."""

    VARINT = 0
    I64 = 1
    LEN = 2
    I32 = 5


class TraceRequestField(enum.IntEnum):
    """`ExportTraceServiceRequest` (and `TracesData`, which shares its layout)."""

    RESOURCE_SPANS = 1


class ResourceSpansField(enum.IntEnum):
    RESOURCE = 1
    SCOPE_SPANS = 2
    SCHEMA_URL = 3


class ScopeSpansField(enum.IntEnum):
    SCOPE = 1
    SPANS = 2
    SCHEMA_URL = 3


class SpanField(enum.IntEnum):
    TRACE_ID = 1
    SPAN_ID = 2
    TRACE_STATE = 3
    PARENT_SPAN_ID = 4
    NAME = 5
    KIND = 6
    START_TIME_UNIX_NANO = 7
    END_TIME_UNIX_NANO = 8
    ATTRIBUTES = 9
    DROPPED_ATTRIBUTES_COUNT = 10
    EVENTS = 11
    DROPPED_EVENTS_COUNT = 12
    LINKS = 13
    DROPPED_LINKS_COUNT = 14
    STATUS = 15
    FLAGS = 16


_F = descriptor_pb2.FieldDescriptorProto

# How each field is declared in the views: (descriptor type, repeated, nested view message or "").
# Sub-messages a view leaves undecoded are declared TYPE_BYTES, which reads the same LEN record.
_SPAN_TYPES: dict[SpanField, tuple[int, bool]] = {
    SpanField.TRACE_ID: (_F.TYPE_BYTES, False),
    SpanField.SPAN_ID: (_F.TYPE_BYTES, False),
    SpanField.TRACE_STATE: (_F.TYPE_STRING, False),
    SpanField.PARENT_SPAN_ID: (_F.TYPE_BYTES, False),
    SpanField.NAME: (_F.TYPE_STRING, False),
    SpanField.KIND: (_F.TYPE_INT32, False),  # an enum: int32 on the wire
    SpanField.START_TIME_UNIX_NANO: (_F.TYPE_FIXED64, False),
    SpanField.END_TIME_UNIX_NANO: (_F.TYPE_FIXED64, False),
    SpanField.ATTRIBUTES: (_F.TYPE_BYTES, True),  # KeyValue
    SpanField.DROPPED_ATTRIBUTES_COUNT: (_F.TYPE_UINT32, False),
    SpanField.EVENTS: (_F.TYPE_BYTES, True),  # Span.Event
    SpanField.DROPPED_EVENTS_COUNT: (_F.TYPE_UINT32, False),
    SpanField.LINKS: (_F.TYPE_BYTES, True),  # Span.Link
    SpanField.DROPPED_LINKS_COUNT: (_F.TYPE_UINT32, False),
    SpanField.STATUS: (_F.TYPE_BYTES, False),  # Status
    SpanField.FLAGS: (_F.TYPE_FIXED32, False),
}

_PACKAGE = "coral_ebpf.otlp.wire"


def _view(message_name: str, spans_as_bytes: bool) -> Any:
    """A message class for `ExportTraceServiceRequest` in its own descriptor pool.

    With `spans_as_bytes` each span stays raw; otherwise spans are parsed with `_SPAN_TYPES`.
    """
    file = descriptor_pb2.FileDescriptorProto(
        name=f"coral_ebpf/otlp/wire_{message_name.lower()}.proto", package=_PACKAGE, syntax="proto3"
    )

    def add(name: str, fields: Iterable[tuple[enum.IntEnum, int, bool, str]]) -> None:
        proto = file.message_type.add(name=name)
        for number, kind, repeated, nested in fields:
            field = proto.field.add(
                name=number.name.lower(),
                number=int(number),
                type=kind,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            )
            if nested:
                field.type_name = f".{_PACKAGE}.{nested}"

    if spans_as_bytes:
        spans: tuple[enum.IntEnum, int, bool, str] = (ScopeSpansField.SPANS, _F.TYPE_BYTES, True, "")
    else:
        add("Span", [(number, kind, repeated, "") for number, (kind, repeated) in _SPAN_TYPES.items()])
        spans = (ScopeSpansField.SPANS, _F.TYPE_MESSAGE, True, "Span")
    add(
        "ScopeSpans",
        [
            (ScopeSpansField.SCOPE, _F.TYPE_BYTES, False, ""),
            spans,
            (ScopeSpansField.SCHEMA_URL, _F.TYPE_STRING, False, ""),
        ],
    )
    add(
        "ResourceSpans",
        [
            (ResourceSpansField.RESOURCE, _F.TYPE_BYTES, False, ""),
            (ResourceSpansField.SCOPE_SPANS, _F.TYPE_MESSAGE, True, "ScopeSpans"),
            (ResourceSpansField.SCHEMA_URL, _F.TYPE_STRING, False, ""),
        ],
    )
    add(message_name, [(TraceRequestField.RESOURCE_SPANS, _F.TYPE_MESSAGE, True, "ResourceSpans")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{message_name}"))


LazyTraceRequest: Any = _view("LazyTraceRequest", spans_as_bytes=False)
TraceSkeleton: Any = _view("TraceSkeleton", spans_as_bytes=True)


def tag(number: int, wire_type: WireType) -> bytes:
    """The encoded key of a field."""
    return varint(number << 3 | wire_type)


def varint(value: int) -> bytes:
    """`value` (0 <= value < 2**64) as a base-128 varint."""
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """A LEN field: bytes, a string's UTF-8 or an encoded sub-message."""
    return tag(number, WireType.LEN) + varint(len(payload)) + payload


# A span's own leading fields: trace_id and span_id (LEN, always 16 and 8 bytes) and the start and end
# times (fixed64). Each tag fits one byte, so the head has a fixed size.
_SPAN_HEAD = struct.Struct("<BB16sBB8sBQBQ")
_TRACE_ID_TAG = (SpanField.TRACE_ID << 3) | WireType.LEN
_SPAN_ID_TAG = (SpanField.SPAN_ID << 3) | WireType.LEN
_START_TAG = (SpanField.START_TIME_UNIX_NANO << 3) | WireType.I64
_END_TAG = (SpanField.END_TIME_UNIX_NANO << 3) | WireType.I64
SPAN_HEAD_SIZE = _SPAN_HEAD.size
_pack_head = _SPAN_HEAD.pack


def span_head(trace_id: bytes, span_id: bytes, start_ns: int, end_ns: int) -> bytes:
    """A span's ids and times, encoded. Followed by any other encoded Span fields it makes a whole Span:
    a message's fields may come in any order, so spans that differ only here can share the rest."""
    return _pack_head(_TRACE_ID_TAG, 16, trace_id, _SPAN_ID_TAG, 8, span_id, _START_TAG, start_ns, _END_TAG, end_ns)


def spans_entry_prefix(span_size: int) -> bytes:
    """What goes before an encoded Span of `span_size` bytes to make it one `ScopeSpans.spans` entry."""
    return tag(ScopeSpansField.SPANS, WireType.LEN) + varint(span_size)


def encode_traces_request(groups: Iterable[tuple[bytes, bytes, Iterable[bytes]]]) -> bytes:
    """A serialized ExportTraceServiceRequest: one ResourceSpans holding one ScopeSpans per group.

    Each group is (encoded Resource, encoded InstrumentationScope, `ScopeSpans.spans` entries, each
    already prefixed by `spans_entry_prefix`).
    """
    parts = []
    for resource, scope, spans in groups:
        scope_spans = length_delimited(ScopeSpansField.SCOPE, scope) + b"".join(spans)
        resource_spans = length_delimited(ResourceSpansField.RESOURCE, resource) + length_delimited(
            ResourceSpansField.SCOPE_SPANS, scope_spans
        )
        parts.append(length_delimited(TraceRequestField.RESOURCE_SPANS, resource_spans))
    return b"".join(parts)


__all__ = [
    "SPAN_HEAD_SIZE",
    "LazyTraceRequest",
    "ResourceSpansField",
    "ScopeSpansField",
    "SpanField",
    "TraceRequestField",
    "TraceSkeleton",
    "WireType",
    "encode_traces_request",
    "length_delimited",
    "span_head",
    "spans_entry_prefix",
    "tag",
    "varint",
]
