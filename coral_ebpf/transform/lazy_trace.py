"""A wire-compatible view of `ExportTraceServiceRequest` that leaves sub-messages as bytes.

Creating a Python wrapper for every attribute KeyValue costs ~0.25 us; a span has 10-20 of
them. This descriptor declares `Span.attributes`, `status`, `events`, `links`, the resource
and the scope as `bytes` (the same wire type as a message), so parsing leaves them raw and
`KeyValueCache` decodes each distinct KeyValue once. Field numbers are those of
opentelemetry/proto/trace/v1/trace.proto.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "coral_ebpf.lazy_trace"


def _build() -> Any:
    file = descriptor_pb2.FileDescriptorProto(name="coral_ebpf_lazy_trace.proto", package=_PACKAGE, syntax="proto3")

    def message(name: str, fields: list[tuple[str, int, int, bool, str]]) -> None:
        proto = file.message_type.add(name=name)
        for field_name, number, kind, repeated, type_name in fields:
            field = proto.field.add(
                name=field_name,
                number=number,
                type=kind,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            )
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"

    message(
        "Span",
        [
            ("trace_id", 1, _F.TYPE_BYTES, False, ""),
            ("span_id", 2, _F.TYPE_BYTES, False, ""),
            ("trace_state", 3, _F.TYPE_STRING, False, ""),
            ("parent_span_id", 4, _F.TYPE_BYTES, False, ""),
            ("name", 5, _F.TYPE_STRING, False, ""),
            ("kind", 6, _F.TYPE_INT32, False, ""),
            ("start_time_unix_nano", 7, _F.TYPE_FIXED64, False, ""),
            ("end_time_unix_nano", 8, _F.TYPE_FIXED64, False, ""),
            ("attributes", 9, _F.TYPE_BYTES, True, ""),
            ("dropped_attributes_count", 10, _F.TYPE_UINT32, False, ""),
            ("events", 11, _F.TYPE_BYTES, True, ""),
            ("dropped_events_count", 12, _F.TYPE_UINT32, False, ""),
            ("links", 13, _F.TYPE_BYTES, True, ""),
            ("dropped_links_count", 14, _F.TYPE_UINT32, False, ""),
            ("status", 15, _F.TYPE_BYTES, False, ""),
            ("flags", 16, _F.TYPE_FIXED32, False, ""),
        ],
    )
    message(
        "ScopeSpans",
        [
            ("scope", 1, _F.TYPE_BYTES, False, ""),
            ("spans", 2, _F.TYPE_MESSAGE, True, "Span"),
            ("schema_url", 3, _F.TYPE_STRING, False, ""),
        ],
    )
    message(
        "ResourceSpans",
        [
            ("resource", 1, _F.TYPE_BYTES, False, ""),
            ("scope_spans", 2, _F.TYPE_MESSAGE, True, "ScopeSpans"),
            ("schema_url", 3, _F.TYPE_STRING, False, ""),
        ],
    )
    message("ExportTraceServiceRequest", [("resource_spans", 1, _F.TYPE_MESSAGE, True, "ResourceSpans")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.ExportTraceServiceRequest"))


LazyTraceRequest: Any = _build()
