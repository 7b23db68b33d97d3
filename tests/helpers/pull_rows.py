"""Rows shaped like the agent's tables (as `storage/pull.py` returns them), for colony tests and bench."""

from __future__ import annotations

import json
import time
from typing import Any

import duckdb
import pyarrow as pa

from coral_ebpf.storage.pull import PULL_TABLES
from coral_ebpf.storage.schema import EXPONENTIAL_COLUMNS, arrow_array

BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]


def http_row(
    seq_id: int,
    counts: list[int],
    *,
    route: str = "/r",
    status: int | None = 200,
    agent_id: str = "agent",
    at: float | None = None,
) -> dict[str, Any]:
    end = int((time.time() if at is None else at) * 1e9)
    return {
        "seq_id": seq_id,
        "timestamp": end,
        "start_time": end - 10_000_000_000,
        "agent_id": agent_id,
        "resource_id": 7,
        "service_name": "shop",
        "service_namespace": None,
        "telemetry_sdk_name": "beyla",
        "metric_name": "http.server.request.duration",
        "side": "server",
        "http_method": "GET",
        "http_route": route,
        "http_status_code": status,
        "url_scheme": "http",
        "server_address": None,
        "server_port": None,
        "error_type": None,
        "unit": "s",
        "count": sum(counts),
        "sum_s": 0.5,
        "min_s": None,
        "max_s": None,
        "bounds_s": list(BOUNDS),
        "bucket_counts": counts,
        "source_temporality": "delta",
        "attributes": json.dumps({"http.route": route, "http.response.status_code": status}),
        **dict.fromkeys(column.name for column in EXPONENTIAL_COLUMNS),  # an explicit-bucket row
    }


def span_row(
    seq_id: int, *, trace_id: int = 0xABC, span_id: int = 1, agent_id: str = "agent", at: float | None = None
) -> dict[str, Any]:
    start = int((time.time() if at is None else at) * 1e9)
    return {
        "seq_id": seq_id,
        "trace_id_hi": trace_id >> 64,
        "trace_id_lo": trace_id & (2**64 - 1),
        "span_id": span_id,
        "parent_span_id": 0,
        "trace_state": None,
        "flags": 1,
        "agent_id": agent_id,
        "resource_id": 7,
        "service_name": "shop",
        "service_namespace": None,
        "process_pid": 4242,
        "telemetry_sdk_name": "beyla",
        "scope_name": "s",
        "scope_version": None,
        "span_name": "GET /r",
        "span_kind": "SERVER",
        "start_time": start,
        "end_time": start + 2_000_000,
        "duration_ns": 2_000_000,
        "status_code": 2,
        "status_message": "boom",
        "http_method": "GET",
        "http_route": "/r",
        "http_status_code": 500,
        "rpc_method": None,
        "rpc_status_code": None,
        "db_system": None,
        "db_operation": None,
        "attributes": json.dumps({"a": 1}),
        "events": None,
        "links": None,
        "dropped_attributes_count": 0,
        "dropped_events_count": 0,
        "dropped_links_count": 0,
    }


def insert_agent_rows(connection: duckdb.DuckDBPyConnection, kind: str, rows: list[dict[str, Any]]) -> None:
    """Insert rows into an agent database with their own seq_ids (to lay out gaps)."""
    spec = PULL_TABLES[kind]
    arrays = [pa.array([r["seq_id"] for r in rows], type=pa.uint64())]
    arrays += [arrow_array([r[c.name] for r in rows], c.arrow) for c in spec.columns]
    table = pa.Table.from_arrays(arrays, names=["seq_id", *spec.column_names])
    connection.register("incoming_rows", table)
    connection.execute(f"INSERT INTO {spec.name} BY NAME SELECT * FROM incoming_rows")
    connection.unregister("incoming_rows")
