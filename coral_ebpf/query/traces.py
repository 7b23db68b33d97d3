"""Trace search over `otel_spans`: one summary per trace, optionally with its spans.

A trace matches when one of its spans starts inside the window (and belongs to `service`, if
given); its summary then covers all its stored spans. The root is the earliest span without
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
    SELECT DISTINCT trace_id FROM otel_spans WHERE {where}
)
SELECT trace_id,
       epoch_us(min(start_time)) AS started_us,
       (max(epoch_ns(end_time)) - min(epoch_ns(start_time))) AS duration_ns,
       count(*) AS spans,
       count(*) FILTER (WHERE status_code = 2) AS error_spans,
       arg_min(service_name, {{'is_child': parent_span_id <> '', 'start': start_time}}) AS root_service,
       arg_min(span_name, {{'is_child': parent_span_id <> '', 'start': start_time}}) AS root_operation,
       list(DISTINCT service_name ORDER BY service_name) AS services
FROM otel_spans
WHERE trace_id IN (SELECT trace_id FROM matched)
GROUP BY trace_id
{having}
ORDER BY started_us DESC, trace_id
LIMIT $limit
"""

_SPANS_SQL = """
SELECT trace_id, span_id, parent_span_id, service_name, span_name, span_kind,
       epoch_us(start_time) AS start_us, duration_ns, status_code, status_message,
       http_status_code, rpc_status_code, process_pid
FROM otel_spans
WHERE trace_id IN (SELECT unnest($trace_ids))
ORDER BY trace_id, start_time, span_id
"""

_STATUS_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}


def find_traces(connection: duckdb.DuckDBPyConnection, params: TraceParams) -> dict[str, Any]:
    start, end = params.window()
    args: dict[str, Any] = {"limit": params.limit}
    clauses = []
    if params.trace_id is not None:
        # An explicit trace id is looked up whatever its age (retention still applies).
        if len(params.trace_id) == 32:
            clauses.append("trace_id = $trace_id")
            args["trace_id"] = params.trace_id
        else:
            clauses.append("starts_with(trace_id, $trace_id)")
            args["trace_id"] = params.trace_id
    else:
        clauses += ["start_time >= $window_start", "start_time <= $window_end"]
        args.update(window_start=utc_naive(start), window_end=utc_naive(end))
    if params.service:
        clauses.append("service_name = $service")
        args["service"] = params.service
    having = ""
    if params.min_duration is not None:
        having = "HAVING (max(epoch_ns(end_time)) - min(epoch_ns(start_time))) >= $min_duration_ns"
        args["min_duration_ns"] = int(params.min_duration * 1e9)
    sql = _SUMMARY_SQL.format(where=" AND ".join(clauses), having=having)
    traces = [
        {
            "trace_id": trace_id,
            "start_time": started_us / 1e6,
            "duration_ms": round(duration_ns / 1e6, 6),
            "span_count": spans,
            "error_spans": error_spans,
            "status": "ERROR" if error_spans else "OK",
            "root_service": root_service,
            "root_operation": root_operation,
            "services": services,
        }
        for trace_id, started_us, duration_ns, spans, error_spans, root_service, root_operation, services in (
            connection.execute(sql, args).fetchall()
        )
    ]
    if params.with_spans and traces:
        spans_by_trace = trace_spans(connection, [t["trace_id"] for t in traces])
        for trace in traces:
            trace["spans"] = spans_by_trace.get(trace["trace_id"], [])
    result: dict[str, Any] = {"kind": "traces", "traces": traces, "window": {"start": start, "end": end}}
    return result


def trace_spans(connection: duckdb.DuckDBPyConnection, trace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    by_trace: dict[str, list[dict[str, Any]]] = {}
    rows = connection.execute(_SPANS_SQL, {"trace_ids": trace_ids}).fetchall()
    for (
        trace_id, span_id, parent, service, name, kind, start_us, duration_ns, status, message, http, rpc, pid,
    ) in rows:
        by_trace.setdefault(trace_id, []).append(
            {
                "span_id": span_id,
                "parent_span_id": parent,
                "service": service,
                "name": name,
                "kind": kind,
                "start_time": start_us / 1e6,
                "duration_ms": round(duration_ns / 1e6, 6),
                "status": _STATUS_NAMES.get(status, str(status)),
                "status_message": message,
                "http_status_code": http,
                "rpc_status_code": rpc,
                "process_pid": pid,
            }
        )
    return by_trace
