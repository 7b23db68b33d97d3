"""`run_query`: the one entry point the CLI and the agent's control socket call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import duckdb

from coral_ebpf.query.params import QueryError, RedParams, TraceParams
from coral_ebpf.query.red import PROTOCOLS, red_summary
from coral_ebpf.query.services import list_services
from coral_ebpf.query.timeline import red_timeline
from coral_ebpf.query.traces import find_traces
from coral_ebpf.query.waterfall import trace_waterfall

QUERY_KINDS = (*PROTOCOLS, "traces", "waterfall", "services")


def run_query(connection: duckdb.DuckDBPyConnection, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Run query `kind` ("http", "grpc", "sql", "messaging", "traces", "waterfall") with `params`; JSON-ready.

    RED kinds return {"kind", "rows": [...], "overall": {...}, "window", "side"} (plus
    "services_available" when no row matched), or with a `by` bucket size the timeline of
    `red_timeline` ({"kind", "by", "buckets", "series", ...}); "traces" returns {"kind",
    "traces": [...], "window"}; "waterfall" (needs `trace_id`) returns {"kind", "trace"};
    "services" (since/until/service) returns {"kind", "services": [...], "window"}.
    Raises QueryError for an unknown kind or bad parameters.
    """
    if kind in PROTOCOLS:
        red_params = RedParams.from_dict(params)
        if red_params.by is not None:
            return red_timeline(connection, kind, red_params)
        return red_summary(connection, kind, red_params)
    if kind == "traces":
        return find_traces(connection, TraceParams.from_dict(params))
    if kind == "waterfall":
        return trace_waterfall(connection, params)
    if kind == "services":
        return list_services(connection, RedParams.from_dict(params))
    raise QueryError(f"unknown query kind {kind!r}; known: {', '.join(QUERY_KINDS)}")


def query_executor(reader: Callable[[], duckdb.DuckDBPyConnection]) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    """`run_query` on a fresh reader connection per call (closed after), for the control socket.

    `reader` is normally `Storage.reader`: queries run inside the agent, on the file it holds.
    """

    def execute(kind: str, params: dict[str, Any]) -> dict[str, Any]:
        connection = reader()
        try:
            return run_query(connection, kind, params)
        finally:
            connection.close()

    return execute
