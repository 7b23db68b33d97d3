"""ExportTraceServiceRequest -> one Arrow table of `otel_spans_raw` rows. This is the hot path.

Each span becomes one tuple of its own fields; the tuples are transposed into columns at the
end (one C-level zip instead of ~25 list appends per span). Values shared by all spans of a
resource and scope (service, pid, resource attributes, ...) are decoded once and become
repeated Arrow arrays, never Python lists.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from coral_ebpf.otlp.wire import LazyTraceRequest
from coral_ebpf.storage.schema import SPANS, arrow_array, arrow_schema
from coral_ebpf.transform.anyvalue import KeyValueCache, attributes_dict, to_json
from coral_ebpf.transform.door import DEFAULT_MAX_AHEAD, TimeWindow
from coral_ebpf.transform.resource import ResourceInfo, resource_info
from coral_ebpf.transform.semconv import SPAN_KINDS, SPAN_PROMOTED
from coral_ebpf.transform.senders import sender_name

_SCHEMA = arrow_schema(SPANS.name)
_TRACE_ID = struct.Struct(">QQ").unpack
_SPAN_ID = struct.Struct(">Q").unpack
_PROMOTED_COUNT = len(SPAN_PROMOTED)

# Per-span columns, in the order of the row tuple built in `flatten`.
_SPAN_COLUMNS = (
    "trace_id_hi",
    "trace_id_lo",
    "span_id",
    "parent_span_id",
    "span_name",
    "span_kind",
    "start_time",
    "end_time",
    "duration_ns",
    "status_code",
    "status_message",
    *SPAN_PROMOTED,
    "attributes",
)
# Fields eBPF spans almost never carry: kept per span only when set, else filled as null/0.
_RARE_COLUMNS = (
    "trace_state",
    "flags",
    "events",
    "links",
    "dropped_attributes_count",
    "dropped_events_count",
    "dropped_links_count",
)
# Columns with one value per (resource, scope) block.
_BLOCK_COLUMNS = (
    "agent_id",
    "resource_id",
    "service_name",
    "service_namespace",
    "process_pid",
    "telemetry_sdk_name",
    "scope_name",
    "scope_version",
)
assert sorted(_SPAN_COLUMNS + _RARE_COLUMNS + _BLOCK_COLUMNS) == sorted(SPANS.column_names)


@dataclass
class SpanRows:
    table: pa.Table
    resources: list[ResourceInfo] = field(default_factory=list)
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    per_sdk: Counter[str] = field(default_factory=Counter)


_NOTHING_PROMOTED: tuple[Any, ...] = (None,) * _PROMOTED_COUNT


def _promote(promotions: list[tuple[int, int, Any]]) -> tuple[Any, ...]:
    """Promoted column values; where old and new names are both present, the newer name wins."""
    values: list[Any] = [None] * _PROMOTED_COUNT
    ranks = [99] * _PROMOTED_COUNT
    for slot, rank, value in promotions:
        if rank < ranks[slot]:
            values[slot] = value
            ranks[slot] = rank
    return tuple(values)


def _status(raw: bytes) -> tuple[int, str | None]:
    if not raw:
        return 0, None
    status = Status.FromString(raw)
    return int(status.code), status.message or None


def _events(raw_events: Any) -> str | None:
    events = []
    for raw in raw_events:
        event = Span.Event.FromString(raw)
        events.append(
            {
                "time_unix_nano": event.time_unix_nano,
                "name": event.name,
                "attributes": attributes_dict(event.attributes),
                "dropped_attributes_count": event.dropped_attributes_count,
            }
        )
    return to_json(events)


def _links(raw_links: Any) -> str | None:
    links = []
    for raw in raw_links:
        link = Span.Link.FromString(raw)
        links.append(
            {
                "trace_id": link.trace_id.hex(),
                "span_id": link.span_id.hex(),
                "trace_state": link.trace_state,
                "attributes": attributes_dict(link.attributes),
            }
        )
    return to_json(links)


class SpanFlattener:
    """Turns trace requests into `otel_spans_raw` rows. One instance may serve several threads."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self._attributes = KeyValueCache(SPAN_PROMOTED)
        self._statuses: dict[bytes, tuple[int, str | None]] = {}
        # Spans of one route share their promoted values (method, route, status, ...).
        self._promoted: dict[tuple[tuple[int, int, Any], ...], tuple[Any, ...]] = {}
        self._resources: dict[bytes, ResourceInfo] = {}
        self._scopes: dict[bytes, tuple[str | None, str | None]] = {}

    def _resource(self, raw: bytes) -> ResourceInfo:
        info = self._resources.get(raw)
        if info is None:
            info = resource_info(Resource.FromString(raw), raw)
            if len(self._resources) > 4096:
                self._resources.clear()
            self._resources[raw] = info
        return info

    def _scope(self, raw: bytes) -> tuple[str | None, str | None]:
        scope = self._scopes.get(raw)
        if scope is None:
            decoded = InstrumentationScope.FromString(raw)
            scope = (decoded.name or None, decoded.version or None)
            if len(self._scopes) > 4096:
                self._scopes.clear()
            self._scopes[raw] = scope
        return scope

    def flatten(self, request: ExportTraceServiceRequest, window: TimeWindow | None = None) -> SpanRows:
        return self.flatten_serialized(request.SerializeToString(), window)

    def flatten_serialized(self, data: bytes, window: TimeWindow | None = None) -> SpanRows:
        """Rows from a serialized ExportTraceServiceRequest. Raises DecodeError if it is malformed.

        Spans ending after `window` (default: more than one day ahead of now) are rejected.
        """
        window = window or TimeWindow.now(DEFAULT_MAX_AHEAD)
        ceiling = window.ceiling_ns
        too_late = window.too_late("end_time_unix_nano")
        lazy = LazyTraceRequest.FromString(data)
        rows: list[tuple[Any, ...]] = []
        append = rows.append
        blocks: list[tuple[tuple[Any, ...], int]] = []
        rare: list[tuple[int, tuple[Any, ...]]] = []
        resources: dict[int, ResourceInfo] = {}
        reasons: Counter[str] = Counter()
        per_sdk: Counter[str] = Counter()
        cached = self._attributes.get
        decode = self._attributes.decode
        statuses = self._statuses
        promoted_cache = self._promoted
        kinds = SPAN_KINDS
        trace_words = _TRACE_ID
        span_word = _SPAN_ID
        for resource_spans in lazy.resource_spans:
            info = self._resource(resource_spans.resource)
            for scope_spans in resource_spans.scope_spans:
                scope_name, scope_version = self._scope(scope_spans.scope)
                before = len(rows)
                for span in scope_spans.spans:
                    trace_id = span.trace_id
                    span_id = span.span_id
                    parent = span.parent_span_id
                    if len(trace_id) != 16 or len(span_id) != 8 or (parent and len(parent) != 8):
                        reasons["invalid id length (trace_id 16 bytes, span_id 8, parent_span_id 0 or 8)"] += 1
                        continue
                    trace_hi, trace_lo = trace_words(trace_id)
                    (span_word_value,) = span_word(span_id)
                    if not (trace_hi or trace_lo) or not span_word_value:
                        reasons["all-zero trace_id or span_id"] += 1
                        continue
                    start = span.start_time_unix_nano
                    end = span.end_time_unix_nano
                    if start == 0 or end < start:
                        reasons["invalid span times (start_time missing or end before start)"] += 1
                        continue
                    if end > ceiling:
                        reasons[too_late] += 1
                        continue
                    fragments = []
                    promotions = None
                    try:
                        for raw in span.attributes:
                            entry = cached(raw) or decode(raw)
                            fragments.append(entry[0])
                            if entry[1] is not None:
                                if promotions is None:
                                    promotions = [entry[1]]
                                else:
                                    promotions.append(entry[1])
                        status = statuses.get(span.status)
                        if status is None:
                            status = _status(span.status)
                            if len(statuses) < 1024:
                                statuses[span.status] = status
                        if not 0 <= status[0] <= 2:  # the column is SMALLINT; OTel defines 0, 1, 2
                            reasons["status.code is not an OTel status code (0 unset, 1 ok, 2 error)"] += 1
                            continue
                        if (
                            span.events
                            or span.links
                            or span.trace_state
                            or span.flags
                            or span.dropped_attributes_count
                            or span.dropped_events_count
                            or span.dropped_links_count
                        ):
                            rare.append((len(rows), _rare_fields(span)))
                    except DecodeError:
                        reasons["undecodable attribute, status, event or link"] += 1
                        continue
                    promoted: tuple[Any, ...] | None
                    if promotions is None:
                        promoted = _NOTHING_PROMOTED
                    else:
                        combination = tuple(promotions)
                        promoted = promoted_cache.get(combination)
                        if promoted is None:
                            promoted = _promote(promotions)
                            if len(promoted_cache) < 4096:
                                promoted_cache[combination] = promoted
                    kind = span.kind
                    append(
                        (
                            trace_hi,
                            trace_lo,
                            span_word_value,
                            span_word(parent)[0] if parent else 0,
                            span.name,
                            kinds[kind] if 0 <= kind < 6 else str(kind),
                            start,
                            end,
                            end - start,
                            status[0],
                            status[1],
                            *promoted,
                            "{" + ",".join(fragments) + "}",
                        )
                    )
                count = len(rows) - before
                if count:
                    block = (
                        self.agent_id,
                        info.resource_id,
                        info.service_name,
                        info.service_namespace,
                        info.process_pid,
                        info.sdk_name,
                        scope_name,
                        scope_version,
                    )
                    blocks.append((block, count))
                    resources[info.resource_id] = info
                per_sdk[sender_name(info.sdk_name, scope_name)] += count
        table = _to_table(rows, blocks, rare)
        return SpanRows(table, list(resources.values()), sum(reasons.values()), reasons, per_sdk)


def _rare_fields(span: Any) -> tuple[Any, ...]:
    """Values for _RARE_COLUMNS. Raises DecodeError if an event or link does not decode."""
    return (
        span.trace_state or None,
        span.flags,
        _events(span.events) if span.events else None,
        _links(span.links) if span.links else None,
        span.dropped_attributes_count,
        span.dropped_events_count,
        span.dropped_links_count,
    )


_RARE_DEFAULTS = (None, 0, None, None, 0, 0, 0)


def _to_table(
    rows: list[tuple[Any, ...]],
    blocks: list[tuple[tuple[Any, ...], int]],
    rare: list[tuple[int, tuple[Any, ...]]],
) -> pa.Table:
    if not rows:
        return _SCHEMA.empty_table()
    arrays: dict[str, pa.Array] = {}
    for name, column in zip(_SPAN_COLUMNS, zip(*rows, strict=True), strict=True):
        arrays[name] = arrow_array(column, _SCHEMA.field(name).type)
    for index, name in enumerate(_RARE_COLUMNS):
        arrow_type = _SCHEMA.field(name).type
        if rare:
            values = [_RARE_DEFAULTS[index]] * len(rows)
            for row, fields in rare:
                values[row] = fields[index]
            arrays[name] = arrow_array(values, arrow_type)
        else:
            arrays[name] = _repeat(_RARE_DEFAULTS[index], arrow_type, len(rows))
    for index, name in enumerate(_BLOCK_COLUMNS):
        arrow_type = _SCHEMA.field(name).type
        parts = [_repeat(block[index], arrow_type, count) for block, count in blocks]
        arrays[name] = parts[0] if len(parts) == 1 else pa.concat_arrays(parts)
    return pa.Table.from_arrays([arrays[f.name] for f in _SCHEMA], schema=_SCHEMA)


def _repeat(value: Any, arrow_type: pa.DataType, count: int) -> pa.Array:
    if isinstance(arrow_type, pa.ExtensionType):
        storage = pa.repeat(pa.scalar(value, type=arrow_type.storage_type), count)
        return pa.ExtensionArray.from_storage(arrow_type, storage)
    return pa.repeat(pa.scalar(value, type=arrow_type), count)
