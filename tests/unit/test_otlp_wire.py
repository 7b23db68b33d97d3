"""`coral_ebpf.otlp.wire` against the official OTLP protobuf classes (opentelemetry-proto).

Both directions: what wire.py encodes must parse with the official classes into the intended message,
and what the official classes encode must read the same through the lazy view and the skeleton.
"""

from __future__ import annotations

import enum
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from coral_ebpf.otlp import wire

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        (wire.TraceRequestField, ExportTraceServiceRequest),
        (wire.ResourceSpansField, ResourceSpans),
        (wire.ScopeSpansField, ScopeSpans),
        (wire.SpanField, Span),
    ],
)
def test_field_numbers_are_the_official_ones(numbers: type[enum.IntEnum], message: Any) -> None:
    official = {field.number: field.name for field in message.DESCRIPTOR.fields}
    ours = {int(member): member.name.lower() for member in numbers}
    assert ours == official


def test_lazy_view_declares_each_span_field_with_the_official_wire_type() -> None:
    lazy_span = wire.LazyTraceRequest.DESCRIPTOR.fields_by_name["resource_spans"].message_type
    lazy_span = lazy_span.fields_by_name["scope_spans"].message_type.fields_by_name["spans"].message_type
    for field in Span.DESCRIPTOR.fields:
        ours = lazy_span.fields_by_number[field.number]
        assert ours.name == field.name
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            assert ours.type == FieldDescriptor.TYPE_BYTES, field.name  # kept raw: the same LEN record
        elif field.type == FieldDescriptor.TYPE_ENUM:
            assert ours.type == FieldDescriptor.TYPE_INT32, field.name  # enums are int32 varints
        else:
            assert ours.type == field.type, field.name
        assert _is_repeated(ours) == _is_repeated(field), field.name


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


# --- wire.py encodes, the official classes parse -------------------------------------------------


@pytest.mark.parametrize(
    "value", [0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**31 - 1, 2**32, 2**35 + 7, 2**63, U64_MAX]
)
def test_varint_matches_protobuf(value: int) -> None:
    # AnyValue.int_value (field 3, an int64: two's complement on the wire) takes every 64-bit pattern.
    value_message = AnyValue(int_value=value - 2**64 if value >= 2**63 else value)
    assert wire.tag(3, wire.WireType.VARINT) + wire.varint(value) == value_message.SerializeToString()


def test_empty_request_is_the_empty_message() -> None:
    assert wire.encode_traces_request([]) == b""
    assert ExportTraceServiceRequest.FromString(wire.encode_traces_request([])) == ExportTraceServiceRequest()


def _rest(**fields: Any) -> bytes:
    """The Span fields other than ids and times, encoded by the official class (as the RED engine does)."""
    return Span(**fields).SerializeToString()


def _encode(groups: list[tuple[Resource, InstrumentationScope, list[tuple[bytes, bytes, int, int, bytes]]]]) -> bytes:
    encoded_groups = []
    for resource, scope, spans in groups:
        entries = []
        for trace_id, span_id, start, end, rest in spans:
            span = wire.span_head(trace_id, span_id, start, end) + rest
            assert len(span) == wire.SPAN_HEAD_SIZE + len(rest)
            entries.append(wire.spans_entry_prefix(len(span)) + span)
        encoded_groups.append((resource.SerializeToString(), scope.SerializeToString(), entries))
    return wire.encode_traces_request(encoded_groups)


def test_encoded_spans_parse_with_the_official_classes() -> None:
    nested = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                KeyValue(key="list", value=AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=-1)]))),
                KeyValue(key="deep", value=AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="x")]))),
            ]
        )
    )
    attributes = [
        KeyValue(key="http.route", value=AnyValue(string_value="/café/☕/𝄞")),
        KeyValue(key="big", value=AnyValue(int_value=-(2**63))),
        KeyValue(key="bytes", value=AnyValue(bytes_value=b"\x00\xff")),
        KeyValue(key="nested", value=nested),
    ]
    shared: dict[str, Any] = {
        "name": "GET /café/☕",
        "kind": Span.SpanKind.SPAN_KIND_SERVER,
        "attributes": attributes,
        "status": Status(code=Status.StatusCode.STATUS_CODE_ERROR, message="ünïcode"),
        "dropped_attributes_count": U32_MAX,
        "flags": U32_MAX,
    }
    rest = _rest(**shared)
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="サービス"))])
    scope = InstrumentationScope(name="coral-ebpf/red", version="1.0")
    trace_id, span_id = bytes(range(1, 17)), b"\xff" * 8
    payload = _encode(
        [
            (
                resource,
                scope,
                [(trace_id, span_id, 1, U64_MAX, rest), (b"\x01" * 16, b"\x02" * 8, U64_MAX, U64_MAX, b"")],
            ),
            (Resource(), InstrumentationScope(), []),
        ]
    )

    request = ExportTraceServiceRequest.FromString(payload)

    expected = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=resource,
                scope_spans=[
                    ScopeSpans(
                        scope=scope,
                        spans=[
                            Span(
                                trace_id=trace_id,
                                span_id=span_id,
                                start_time_unix_nano=1,
                                end_time_unix_nano=U64_MAX,
                                **shared,
                            ),
                            Span(
                                trace_id=b"\x01" * 16,
                                span_id=b"\x02" * 8,
                                start_time_unix_nano=U64_MAX,
                                end_time_unix_nano=U64_MAX,
                            ),
                        ],
                    )
                ],
            ),
            ResourceSpans(resource=Resource(), scope_spans=[ScopeSpans(scope=InstrumentationScope())]),
        ]
    )
    assert request == expected
    assert request.resource_spans[0].scope_spans[0].spans[0].attributes[3].value == nested


def test_length_delimited_matches_protobuf_for_long_unicode_strings() -> None:
    name = "ü" * 10_000  # a two-byte length prefix and then some
    assert wire.length_delimited(wire.SpanField.NAME, name.encode()) == Span(name=name).SerializeToString()


# --- the official classes encode, the lazy view and the skeleton read -----------------------------


def _full_request() -> ExportTraceServiceRequest:
    nested = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=AnyValue(double_value=1.5))]))
    span = Span(
        trace_id=b"\xab" * 16,
        span_id=b"\xcd" * 8,
        trace_state="vendor=ü",
        parent_span_id=b"\x01" * 8,
        name="SELECT ☕",
        kind=Span.SpanKind.SPAN_KIND_CLIENT,
        start_time_unix_nano=U64_MAX - 1,
        end_time_unix_nano=U64_MAX,
        attributes=[
            KeyValue(key="a", value=AnyValue(int_value=2**63 - 1)),
            KeyValue(key="nested", value=nested),
            KeyValue(key="array", value=AnyValue(array_value=ArrayValue(values=[nested, AnyValue(bool_value=True)]))),
        ],
        dropped_attributes_count=U32_MAX,
        events=[Span.Event(time_unix_nano=5, name="ev", attributes=[KeyValue(key="e", value=nested)])],
        dropped_events_count=7,
        links=[Span.Link(trace_id=b"\x02" * 16, span_id=b"\x03" * 8, trace_state="t", flags=1)],
        dropped_links_count=U32_MAX,
        status=Status(code=Status.StatusCode.STATUS_CODE_OK, message="fine"),
        flags=0x301,
    )
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="db"))]),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(name="s", version="v"), spans=[span, Span()], schema_url="u1"
                    ),
                    ScopeSpans(),
                ],
                schema_url="u2",
            ),
            ResourceSpans(),
        ]
    )


def test_lazy_view_reads_every_field_as_the_official_classes_do() -> None:
    official = _full_request()
    lazy = wire.LazyTraceRequest.FromString(official.SerializeToString())

    assert len(lazy.resource_spans) == len(official.resource_spans)
    for lazy_resource, resource in zip(lazy.resource_spans, official.resource_spans, strict=True):
        assert lazy_resource.schema_url == resource.schema_url
        assert Resource.FromString(lazy_resource.resource) == resource.resource
        assert len(lazy_resource.scope_spans) == len(resource.scope_spans)
        for lazy_scope, scope in zip(lazy_resource.scope_spans, resource.scope_spans, strict=True):
            assert lazy_scope.schema_url == scope.schema_url
            assert InstrumentationScope.FromString(lazy_scope.scope) == scope.scope
            assert len(lazy_scope.spans) == len(scope.spans)
            for lazy_span, span in zip(lazy_scope.spans, scope.spans, strict=True):
                _assert_same_span(lazy_span, span)


def _assert_same_span(lazy: Any, span: Span) -> None:
    for field in Span.DESCRIPTOR.fields:
        ours, theirs = getattr(lazy, field.name), getattr(span, field.name)
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            assert ours == theirs, field.name
        elif _is_repeated(field):
            kind = type(theirs[0]) if theirs else None
            assert [kind.FromString(raw) for raw in ours] == list(theirs) if kind else not ours, field.name
        else:
            assert type(theirs).FromString(ours) == theirs, field.name


def test_lazy_view_reserializes_to_the_same_message() -> None:
    official = _full_request()
    lazy = wire.LazyTraceRequest.FromString(official.SerializeToString())
    assert ExportTraceServiceRequest.FromString(lazy.SerializeToString()) == official


def test_lazy_view_of_nothing() -> None:
    lazy = wire.LazyTraceRequest.FromString(b"")
    assert len(lazy.resource_spans) == 0
    span = wire.LazyTraceRequest.FromString(_encode([(Resource(), InstrumentationScope(), [])]))
    assert len(span.resource_spans[0].scope_spans[0].spans) == 0


def test_lazy_view_reads_what_wire_encodes() -> None:
    rest = _rest(name="x", attributes=[KeyValue(key="k", value=AnyValue(string_value="ü"))])
    payload = _encode([(Resource(), InstrumentationScope(name="n"), [(b"\x01" * 16, b"\x02" * 8, 3, U64_MAX, rest)])])
    (span,) = wire.LazyTraceRequest.FromString(payload).resource_spans[0].scope_spans[0].spans
    assert (span.trace_id, span.span_id, span.start_time_unix_nano, span.end_time_unix_nano, span.name) == (
        b"\x01" * 16,
        b"\x02" * 8,
        3,
        U64_MAX,
        "x",
    )
    assert [KeyValue.FromString(raw) for raw in span.attributes] == [
        KeyValue(key="k", value=AnyValue(string_value="ü"))
    ]


def test_skeleton_keeps_each_span_whole() -> None:
    official = _full_request()
    skeleton = wire.TraceSkeleton.FromString(official.SerializeToString())
    raw = [span for resource in skeleton.resource_spans for scope in resource.scope_spans for span in scope.spans]
    spans = [span for resource in official.resource_spans for scope in resource.scope_spans for span in scope.spans]
    assert [Span.FromString(span) for span in raw] == spans
    assert ExportTraceServiceRequest.FromString(skeleton.SerializeToString()) == official
