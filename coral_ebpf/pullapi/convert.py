"""Rows of the agent's tables <-> pull API messages, both ways (the agent encodes, the colony decodes).

A row is a dict of the table's columns (see `storage/pull.py`: times in unix ns, JSON as text).
Decoding also accepts messages from an agent that only fills the Go fields (no `detail`):
bounds come from `latency_buckets` (ms), a missing +Inf count is 0, the interval start is
the timestamp. The messages carry explicit buckets only (the Go agent's format): a row holding an
exponential histogram is sent folded into OpenTelemetry's default duration bounds
(`exponential.folded`: exact counts, coarser resolution).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coral_ebpf.pullapi._generated import agent_pb2 as pb
from coral_ebpf.storage import exponential
from coral_ebpf.storage.exponential import ExpBuckets
from coral_ebpf.storage.schema import EXPONENTIAL_COLUMNS

# Per data type; the message classes differ, so callers see them as protobuf messages of any class.
Encoder = Callable[[Mapping[str, Any]], Any]
Decoder = Callable[[Any, str], dict[str, Any]]

NS_PER_MS = 1_000_000
_OPTIONAL_DETAIL = ("sum_s", "min_s", "max_s", "server_port", "error_type")
_DETAIL_TEXT = ("side", "service_namespace", "telemetry_sdk_name", "metric_name", "unit", "source_temporality")


def _string_map(attributes_json: str | None) -> dict[str, str]:
    """The Go message's string map: every attribute, non-strings as JSON text."""
    if not attributes_json:
        return {}
    decoded = json.loads(attributes_json)
    if not isinstance(decoded, dict):
        return {}
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in decoded.items()}


def _explicit(row: Mapping[str, Any]) -> tuple[list[float], list[int]]:
    """The row's (bounds_s, bucket_counts), an exponential row folded into the default bounds."""
    if row.get("exp_scale") is None:
        return row["bounds_s"], row["bucket_counts"]
    buckets = ExpBuckets(
        row["exp_scale"],
        row["exp_zero_count"] or 0,
        row["exp_zero_threshold_s"] or 0.0,
        row["exp_positive_offset"] or 0,
        tuple(row["exp_positive_counts"] or ()),
        row["exp_negative_offset"] or 0,
        tuple(row["exp_negative_counts"] or ()),
    )
    return list(exponential.DEFAULT_DURATION_BOUNDS), exponential.folded(buckets)


def _metric_detail(row: Mapping[str, Any]) -> pb.MetricDetail:
    detail = pb.MetricDetail(
        timestamp_unix_nano=row["timestamp"],
        start_time_unix_nano=row["start_time"],
        bounds_s=_explicit(row)[0],
        server_address=row["server_address"] or "",
        resource_id=row["resource_id"],
        attributes_json=row["attributes"] or "",
    )
    for name in _DETAIL_TEXT:
        setattr(detail, name, row[name] or "")
    for name in _OPTIONAL_DETAIL:
        if row[name] is not None:
            setattr(detail, name, row[name])
    return detail


def _histogram_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    bounds, counts = _explicit(row)
    return {
        "timestamp": row["timestamp"] // NS_PER_MS,
        "service_name": row["service_name"],
        "latency_buckets": [bound * 1000.0 for bound in bounds],
        "latency_counts": counts,
        "attributes": _string_map(row["attributes"]),
        "seq_id": row["seq_id"],
        "detail": _metric_detail(row),
    }


class Carried(enum.Enum):
    """How a table's own column travels in its message (the field has the column's name)."""

    TEXT = "text"  # a string field; NULL travels as "" and comes back as NULL
    OPTIONAL = "optional"  # an optional field, unset for NULL


@dataclass(frozen=True)
class MetricTable:
    """One metric table's message: its class, its count field, and its own columns in column order."""

    message: Callable[..., Any]
    count_field: str
    columns: tuple[tuple[str, Carried], ...]


_TEXT, _OPTIONAL = Carried.TEXT, Carried.OPTIONAL
METRIC_TABLES: dict[str, MetricTable] = {
    "http": MetricTable(
        pb.EbpfHttpMetric,
        "request_count",
        (("http_method", _TEXT), ("http_route", _TEXT), ("http_status_code", _OPTIONAL), ("url_scheme", _TEXT)),
    ),
    "grpc": MetricTable(
        pb.EbpfGrpcMetric,
        "request_count",
        (("grpc_method", _TEXT), ("grpc_status_code", _OPTIONAL), ("rpc_system", _TEXT)),
    ),
    "sql": MetricTable(
        pb.EbpfSqlMetric,
        "query_count",
        (("sql_operation", _TEXT), ("table_name", _TEXT), ("db_system", _TEXT), ("db_namespace", _TEXT)),
    ),
}


def _metric_encoder(table: MetricTable) -> Encoder:
    def encode(row: Mapping[str, Any]) -> Any:
        text = {column: row[column] or "" for column, carried in table.columns if carried is Carried.TEXT}
        message = table.message(**text, **{table.count_field: row["count"]}, **_histogram_fields(row))
        for column, carried in table.columns:
            if carried is Carried.OPTIONAL and row[column] is not None:
                setattr(message, column, row[column])
        return message

    return encode


def _hex_id(value: int, digits: int) -> str:
    return f"{value:0{digits}x}"


def span_message(row: Mapping[str, Any]) -> pb.EbpfTraceSpan:
    detail = pb.SpanDetail(
        start_time_unix_nano=row["start_time"],
        end_time_unix_nano=row["end_time"],
        duration_ns=row["duration_ns"],
        trace_state=row["trace_state"] or "",
        flags=row["flags"] or 0,
        resource_id=row["resource_id"],
        service_namespace=row["service_namespace"] or "",
        telemetry_sdk_name=row["telemetry_sdk_name"] or "",
        scope_name=row["scope_name"] or "",
        scope_version=row["scope_version"] or "",
        status_message=row["status_message"] or "",
        http_method=row["http_method"] or "",
        http_route=row["http_route"] or "",
        rpc_method=row["rpc_method"] or "",
        db_system=row["db_system"] or "",
        db_operation=row["db_operation"] or "",
        attributes_json=row["attributes"] or "",
        events_json=row["events"] or "",
        links_json=row["links"] or "",
        dropped_attributes_count=row["dropped_attributes_count"] or 0,
        dropped_events_count=row["dropped_events_count"] or 0,
        dropped_links_count=row["dropped_links_count"] or 0,
    )
    if row["http_status_code"] is not None:
        detail.http_status_code = row["http_status_code"]
    if row["rpc_status_code"] is not None:
        detail.rpc_status_code = row["rpc_status_code"]
    return pb.EbpfTraceSpan(
        trace_id=_hex_id(row["trace_id_hi"], 16) + _hex_id(row["trace_id_lo"], 16),
        span_id=_hex_id(row["span_id"], 16),
        parent_span_id=_hex_id(row["parent_span_id"], 16) if row["parent_span_id"] else "",
        service_name=row["service_name"],
        span_name=row["span_name"],
        span_kind=row["span_kind"],
        start_time=row["start_time"] // NS_PER_MS,
        duration_us=row["duration_ns"] // 1000,
        status_code=row["status_code"],
        attributes=_string_map(row["attributes"]),
        seq_id=row["seq_id"],
        process_pid=row["process_pid"],
        detail=detail,
    )


ENCODERS: dict[str, Encoder] = {
    **{kind: _metric_encoder(table) for kind, table in METRIC_TABLES.items()},
    "traces": span_message,
}

# ---------------------------------------------------------------------------------------- decoding


def _optional(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def _metric_row(message: Any, agent_id: str) -> dict[str, Any]:
    """The columns every metric table shares, from a metric message."""
    if message.HasField("detail"):
        detail = message.detail
        bounds = list(detail.bounds_s)
        row: dict[str, Any] = {
            "timestamp": detail.timestamp_unix_nano,
            "start_time": detail.start_time_unix_nano,
            "server_address": detail.server_address or None,
            "resource_id": detail.resource_id,
            "attributes": detail.attributes_json or None,
        }
        for name in _DETAIL_TEXT:
            row[name] = getattr(detail, name) or None
        for name in _OPTIONAL_DETAIL:
            row[name] = _optional(detail, name)
    else:  # a Go agent: only what its fields carry
        bounds = [bound / 1000.0 for bound in message.latency_buckets]
        timestamp = message.timestamp * NS_PER_MS
        row = {
            "timestamp": timestamp,
            "start_time": timestamp,
            "server_address": None,
            "resource_id": 0,
            "attributes": json.dumps(dict(message.attributes)) if message.attributes else None,
            "side": "server",
            "service_namespace": None,
            "telemetry_sdk_name": "beyla",
            "metric_name": "",
            "unit": "s",
            "source_temporality": "delta",
            **dict.fromkeys(_OPTIONAL_DETAIL),
        }
    counts = list(message.latency_counts)
    counts += [0] * (len(bounds) + 1 - len(counts))
    row.update(
        seq_id=message.seq_id,
        agent_id=agent_id,
        service_name=message.service_name,
        bounds_s=bounds,
        bucket_counts=counts,
        count=sum(counts),
    )
    row.update(dict.fromkeys(column.name for column in EXPONENTIAL_COLUMNS))  # always explicit on the wire
    return row


def _metric_decoder(table: MetricTable) -> Decoder:
    def decode(message: Any, agent_id: str) -> dict[str, Any]:
        row = _metric_row(message, agent_id)
        for column, carried in table.columns:
            row[column] = (getattr(message, column) or None) if carried is Carried.TEXT else _optional(message, column)
        return row

    return decode


def span_row(message: pb.EbpfTraceSpan, agent_id: str) -> dict[str, Any]:
    trace_id = int(message.trace_id or "0", 16)
    detail = message.detail
    has_detail = message.HasField("detail")
    start = detail.start_time_unix_nano if has_detail else message.start_time * NS_PER_MS
    duration = detail.duration_ns if has_detail else message.duration_us * 1000
    return {
        "seq_id": message.seq_id,
        "trace_id_hi": trace_id >> 64,
        "trace_id_lo": trace_id & 0xFFFFFFFFFFFFFFFF,
        "span_id": int(message.span_id or "0", 16),
        "parent_span_id": int(message.parent_span_id or "0", 16),
        "trace_state": detail.trace_state or None,
        "flags": detail.flags,
        "agent_id": agent_id,
        "resource_id": detail.resource_id,
        "service_name": message.service_name,
        "service_namespace": detail.service_namespace or None,
        "process_pid": message.process_pid,
        "telemetry_sdk_name": detail.telemetry_sdk_name or ("beyla" if not has_detail else None),
        "scope_name": detail.scope_name or None,
        "scope_version": detail.scope_version or None,
        "span_name": message.span_name,
        "span_kind": message.span_kind,
        "start_time": start,
        "end_time": detail.end_time_unix_nano if has_detail else start + duration,
        "duration_ns": duration,
        "status_code": message.status_code,
        "status_message": detail.status_message or None,
        "http_method": detail.http_method or None,
        "http_route": detail.http_route or None,
        "http_status_code": _optional(detail, "http_status_code") if has_detail else None,
        "rpc_method": detail.rpc_method or None,
        "rpc_status_code": _optional(detail, "rpc_status_code") if has_detail else None,
        "db_system": detail.db_system or None,
        "db_operation": detail.db_operation or None,
        "attributes": detail.attributes_json or (json.dumps(dict(message.attributes)) if message.attributes else None),
        "events": detail.events_json or None,
        "links": detail.links_json or None,
        "dropped_attributes_count": detail.dropped_attributes_count,
        "dropped_events_count": detail.dropped_events_count,
        "dropped_links_count": detail.dropped_links_count,
    }


DECODERS: dict[str, Decoder] = {
    **{kind: _metric_decoder(table) for kind, table in METRIC_TABLES.items()},
    "traces": span_row,
}
