"""One trace as a waterfall: its spans in tree order, each with depth, offset and duration.

The rows come in depth-first order (children by start time), so a renderer draws them top to
bottom. A span whose parent was not captured starts a tree of its own at depth 0. Offsets are
from the earliest span start; `bar_fraction()` gives the start and end of a span's bar as
fractions of the trace's duration, which the terminal, the web page and MCP share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import duckdb

from coral_ebpf.query.params import QueryError, TraceParams
from coral_ebpf.query.traces import find_traces

STATEMENT_SUMMARY_CHARS = 60


@dataclass(frozen=True)
class WaterfallSpan:
    span_id: str
    parent_span_id: str
    depth: int
    service: str
    agent: str  # the agent_id that stored the span (a colony holds many agents' spans)
    name: str
    kind: str
    offset_ms: float  # from the trace's first span start
    duration_ms: float
    status: str  # UNSET, OK or ERROR
    status_message: str | None
    error: bool
    attributes: dict[str, Any]  # the key attributes: route, status code, db statement summary


@dataclass(frozen=True)
class Waterfall:
    trace_id: str
    start_time: float  # unix seconds of the first span start
    duration_ms: float
    span_count: int
    error_spans: int
    status: str
    services: list[str]
    agents: list[str]  # the agent_ids whose spans make up the trace
    spans: list[WaterfallSpan]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bar_fraction(span: Mapping[str, Any], trace_duration_ms: float) -> tuple[float, float]:
    """(start, end) of `span`'s bar as fractions 0..1 of the trace's duration."""
    if trace_duration_ms <= 0:
        return 0.0, 1.0
    start = min(max(span["offset_ms"] / trace_duration_ms, 0.0), 1.0)
    end = min(max((span["offset_ms"] + span["duration_ms"]) / trace_duration_ms, start), 1.0)
    return start, end


def statement_summary(statement: str | None) -> str | None:
    """A db statement on one line, cut to STATEMENT_SUMMARY_CHARS (with an ellipsis)."""
    if not statement:
        return None
    text = " ".join(statement.split())
    return text if len(text) <= STATEMENT_SUMMARY_CHARS else text[: STATEMENT_SUMMARY_CHARS - 1] + "…"


def _key_attributes(span: Mapping[str, Any]) -> dict[str, Any]:
    candidates = {
        "http.method": span.get("http_method"),
        "http.route": span.get("http_route"),
        "http.status_code": span.get("http_status_code"),
        "rpc.method": span.get("rpc_method"),
        "rpc.status_code": span.get("rpc_status_code"),
        "db.system": span.get("db_system"),
        "db.operation": span.get("db_operation"),
        "db.statement": statement_summary(span.get("db_statement")),
    }
    return {key: value for key, value in candidates.items() if value is not None and value != ""}


def build_waterfall(trace: Mapping[str, Any]) -> Waterfall:
    """The waterfall of one trace summary that carries its "spans" (as `find_traces` returns it)."""
    spans = list(trace.get("spans", []))
    first = min((span["start_time"] for span in spans), default=trace["start_time"])
    ids = {span["span_id"] for span in spans}
    children: dict[str, list[Mapping[str, Any]]] = {}
    roots: list[Mapping[str, Any]] = []
    for span in spans:
        parent = span["parent_span_id"]
        if parent and parent in ids and parent != span["span_id"]:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)
    rows: list[WaterfallSpan] = []
    seen: set[str] = set()

    def order(group: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return sorted(group, key=lambda s: (s["start_time"], s["span_id"]))

    # An explicit stack, not recursion: a deep (or malformed) trace must not hit Python's limit.
    stack = [(root, 0) for root in reversed(order(roots))]
    while stack:
        span, depth = stack.pop()
        if span["span_id"] in seen:
            continue  # a duplicate span id: shown once
        seen.add(span["span_id"])
        rows.append(
            WaterfallSpan(
                span_id=span["span_id"],
                parent_span_id=span["parent_span_id"],
                depth=depth,
                service=span["service"],
                agent=span["agent"],
                name=span["name"],
                kind=span["kind"],
                offset_ms=round((span["start_time"] - first) * 1000.0, 3),
                duration_ms=span["duration_ms"],
                status=span["status"],
                status_message=span.get("status_message") or None,
                error=span["status"] == "ERROR",
                attributes=_key_attributes(span),
            )
        )
        stack.extend((child, depth + 1) for child in reversed(order(children.get(span["span_id"], []))))
    return Waterfall(
        trace_id=trace["trace_id"],
        start_time=first,
        duration_ms=trace["duration_ms"],
        span_count=trace["span_count"],
        error_spans=trace["error_spans"],
        status=trace["status"],
        services=list(trace["services"]),
        agents=list(trace["agents"]),
        spans=rows,
    )


def trace_waterfall(connection: duckdb.DuckDBPyConnection, params: Mapping[str, Any]) -> dict[str, Any]:
    """Query kind "waterfall": {"kind", "trace": Waterfall as a dict}. Needs `trace_id`."""
    if not params.get("trace_id"):
        raise QueryError("trace_id: the waterfall needs a trace id (32 hex digits, or a prefix of at least 8)")
    trace_params = TraceParams.from_dict({**params, "with_spans": True, "limit": 2})
    found = find_traces(connection, trace_params)["traces"]
    if not found:
        raise QueryError(f"trace_id: no stored trace starts with {trace_params.trace_id!r}")
    if len(found) > 1:
        raise QueryError(f"trace_id: {trace_params.trace_id!r} matches more than one trace; give more digits")
    return {"kind": "waterfall", "trace": build_waterfall(found[0]).to_dict()}
