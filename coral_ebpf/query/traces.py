"""Trace search over `otel_spans_raw`: one summary per trace, optionally with its spans.

A trace matches when one of its spans starts inside the window (and belongs to `service`, if
given); its summary then covers all its stored spans. Newest first, or longest first with
`sort="duration"`; `root_status_code` is the root span's HTTP or gRPC status code. The root is the earliest span without
a parent, or the earliest span when the root was not captured. A trace's status is ERROR
when any of its spans has OTel status ERROR.
"""

from __future__ import annotations

from typing import Any

import duckdb

from coral_ebpf.query.params import TraceParams
from coral_ebpf.storage.retention import utc_naive

_SUMMARY_SQL = """
WITH matched AS (
    SELECT DISTINCT trace_id_hi, trace_id_lo FROM otel_spans_raw WHERE {where}
)
SELECT printf('%016x%016x', r.trace_id_hi, r.trace_id_lo) AS trace_id,
       epoch_us(min(r.start_time)) AS started_us,
       (max(epoch_ns(r.end_time)) - min(epoch_ns(r.start_time))) AS duration_ns,
       count(*) AS spans,
       count(*) FILTER (WHERE r.status_code = 2) AS error_spans,
       arg_min(r.service_name, {{'is_child': r.parent_span_id <> 0, 'start': r.start_time}}) AS root_service,
       arg_min(r.span_name, {{'is_child': r.parent_span_id <> 0, 'start': r.start_time}}) AS root_operation,
       arg_min(coalesce(r.http_status_code, r.rpc_status_code),
               {{'is_child': r.parent_span_id <> 0, 'start': r.start_time}}) AS root_status_code,
       list(DISTINCT r.service_name ORDER BY r.service_name) AS services,
       list(DISTINCT r.agent_id ORDER BY r.agent_id) AS agents
FROM otel_spans_raw AS r
SEMI JOIN matched AS m ON r.trace_id_hi = m.trace_id_hi AND r.trace_id_lo = m.trace_id_lo
GROUP BY r.trace_id_hi, r.trace_id_lo
{having}
ORDER BY {order}, trace_id
LIMIT $limit
"""

_SPANS_SQL = """
SELECT printf('%016x%016x', r.trace_id_hi, r.trace_id_lo) AS trace_id, printf('%016x', r.span_id),
       CASE WHEN r.parent_span_id = 0 THEN '' ELSE printf('%016x', r.parent_span_id) END,
       r.service_name, r.span_name, r.span_kind, epoch_us(r.start_time), r.duration_ns, r.status_code,
       r.status_message, r.http_status_code, r.rpc_status_code, r.process_pid, r.agent_id,
       r.http_method, r.http_route, r.rpc_method, r.db_system, r.db_operation,
       coalesce(json_extract_string(r.attributes, '$."db.query.text"'),
                json_extract_string(r.attributes, '$."db.statement"')) AS db_statement
FROM otel_spans_raw AS r
SEMI JOIN (SELECT unnest($his) AS hi, unnest($los) AS lo) AS wanted
    ON r.trace_id_hi = wanted.hi AND r.trace_id_lo = wanted.lo
ORDER BY trace_id, r.start_time, r.span_id
"""


def trace_id_range(trace_id: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """The (hi, lo) words of the first and last trace ids that start with hex `trace_id`."""
    padding = 32 - len(trace_id)
    first = int(trace_id, 16) << (4 * padding)
    last = first | ((1 << (4 * padding)) - 1)
    return (first >> 64, first & 0xFFFFFFFFFFFFFFFF), (last >> 64, last & 0xFFFFFFFFFFFFFFFF)


def _trace_id_clause(trace_id: str, args: dict[str, Any]) -> str:
    (first_hi, first_lo), (last_hi, last_lo) = trace_id_range(trace_id)
    if first_hi == last_hi:
        args.update(id_hi=first_hi, id_lo_first=first_lo, id_lo_last=last_lo)
        return "trace_id_hi = $id_hi AND trace_id_lo BETWEEN $id_lo_first AND $id_lo_last"
    args.update(id_hi_first=first_hi, id_hi_last=last_hi)
    return "trace_id_hi BETWEEN $id_hi_first AND $id_hi_last"


_STATUS_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}


def find_traces(connection: duckdb.DuckDBPyConnection, params: TraceParams) -> dict[str, Any]:
    start, end = params.window()
    args: dict[str, Any] = {"limit": params.limit}
    clauses = []
    if params.trace_id is not None:
        # An explicit trace id is looked up whatever its age (retention still applies).
        clauses.append(_trace_id_clause(params.trace_id, args))
    else:
        clauses += ["start_time >= $window_start", "start_time <= $window_end"]
        args.update(window_start=utc_naive(start), window_end=utc_naive(end))
    if params.service:
        glob = any(c in params.service for c in "*?[")
        clauses.append("service_name GLOB $service" if glob else "service_name = $service")
        args["service"] = params.service
    if params.agent:
        glob = any(c in params.agent for c in "*?[")
        clauses.append("agent_id GLOB $agent" if glob else "agent_id = $agent")
        args["agent"] = params.agent
    if params.instance:
        # Traces that passed through that instance (spans name their resource; it holds the id).
        clauses.append(
            "resource_id IN (SELECT resource_id FROM otel_resources WHERE service_instance_id GLOB $instance)"
        )
        args["instance"] = params.instance
    conditions = []
    if params.min_duration is not None:
        conditions.append("(max(epoch_ns(r.end_time)) - min(epoch_ns(r.start_time))) >= $min_duration_ns")
        args["min_duration_ns"] = int(params.min_duration * 1e9)
    if params.errors_only:
        conditions.append("count(*) FILTER (WHERE r.status_code = 2) > 0")
    having = f"HAVING {' AND '.join(conditions)}" if conditions else ""
    order = "duration_ns DESC NULLS LAST" if params.sort == "duration" else "started_us DESC NULLS LAST"
    sql = _SUMMARY_SQL.format(where=" AND ".join(clauses), having=having, order=order)
    traces = [
        {
            "trace_id": trace_id,
            "start_time": None if started_us is None else started_us / 1e6,  # None: stored as infinity
            "duration_ms": None if duration_ns is None else round(duration_ns / 1e6, 6),
            "span_count": spans,
            "error_spans": error_spans,
            "status": "ERROR" if error_spans else "OK",
            "root_service": root_service,
            "root_operation": root_operation,
            "root_status_code": root_status_code,
            "services": services,
            "agents": agents,
        }
        for (
            trace_id,
            started_us,
            duration_ns,
            spans,
            error_spans,
            root_service,
            root_operation,
            root_status_code,
            services,
            agents,
        ) in connection.execute(sql, args).fetchall()
    ]
    if params.with_spans and traces:
        spans_by_trace = trace_spans(connection, [t["trace_id"] for t in traces])
        for trace in traces:
            trace["spans"] = spans_by_trace.get(trace["trace_id"], [])
    result: dict[str, Any] = {"kind": "traces", "traces": traces, "window": {"start": start, "end": end}}
    return result


def trace_spans(connection: duckdb.DuckDBPyConnection, trace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    by_trace: dict[str, list[dict[str, Any]]] = {}
    words = [trace_id_range(trace_id)[0] for trace_id in trace_ids]
    args = {"his": [hi for hi, _ in words], "los": [lo for _, lo in words]}
    rows = connection.execute(_SPANS_SQL, args).fetchall()
    for (
        trace_id,
        span_id,
        parent,
        service,
        name,
        kind,
        start_us,
        duration_ns,
        status,
        message,
        http,
        rpc,
        pid,
        agent,
        http_method,
        http_route,
        rpc_method,
        db_system,
        db_operation,
        db_statement,
    ) in rows:
        by_trace.setdefault(trace_id, []).append(
            {
                "span_id": span_id,
                "parent_span_id": parent,
                "service": service,
                "name": name,
                "kind": kind,
                "start_time": None if start_us is None else start_us / 1e6,
                "duration_ms": round(duration_ns / 1e6, 6),
                "status": _STATUS_NAMES.get(status, str(status)),
                "status_message": message,
                "http_status_code": http,
                "rpc_status_code": rpc,
                "process_pid": pid,
                "agent": agent,
                "http_method": http_method,
                "http_route": http_route,
                "rpc_method": rpc_method,
                "db_system": db_system,
                "db_operation": db_operation,
                "db_statement": db_statement,
            }
        )
    return by_trace
