"""The database schema, defined once: each table's columns with their DuckDB and Arrow types.

Transform builds Arrow tables with exactly `arrow_schema(table)` (see `arrow_array`); the writer inserts them by
column name; DDL is generated from the same definitions, so the three cannot drift apart.

Units: every duration column of the RED tables is in **seconds** (`*_s`), whatever unit the
sender used. `otel_histograms` keeps other histograms in the unit named by its `unit` column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "2"


@dataclass(frozen=True)
class Column:
    name: str
    sql: str
    arrow: pa.DataType


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    time_column: str  # retention and window queries filter on this column
    primary_key: str | None = None  # tables with a key are upserted, not appended, and have no seq_id

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]


def _c(name: str, sql: str, arrow: pa.DataType) -> Column:
    return Column(name, sql, arrow)


_TS = pa.timestamp("ns")
_STR = pa.string()
# Arrow's JSON extension type: DuckDB takes it as JSON without re-validating each value
# (transform produces the JSON with a JSON encoder, so it is valid by construction).
_JSON = pa.json_(pa.string())

# The OTLP resources (one per sending process), referenced by `resource_id` from the data
# tables: a resource's ~10 attributes would otherwise be repeated on every span, which cost
# DuckDB about half of its insert time.
RESOURCES = TableSpec(
    "otel_resources",
    (
        _c("resource_id", "UBIGINT NOT NULL", pa.uint64()),  # 64-bit hash of the serialized resource
        _c("service_name", "VARCHAR NOT NULL", _STR),
        _c("service_namespace", "VARCHAR", _STR),
        _c("service_instance_id", "VARCHAR", _STR),
        _c("process_pid", "INTEGER NOT NULL", pa.int32()),
        _c("telemetry_sdk_name", "VARCHAR", _STR),
        _c("attributes", "JSON", pa.json_(pa.string())),
        _c("first_seen", "TIMESTAMP NOT NULL", pa.timestamp("ns")),
        _c("last_seen", "TIMESTAMP NOT NULL", pa.timestamp("ns")),
    ),
    "last_seen",
    primary_key="resource_id",
)

# Who sent the data point (the OTLP resource and the agent that stored it).
_SOURCE = (
    _c("timestamp", "TIMESTAMP NOT NULL", _TS),
    _c("start_time", "TIMESTAMP NOT NULL", _TS),
    _c("agent_id", "VARCHAR NOT NULL", _STR),
    _c("resource_id", "UBIGINT NOT NULL", pa.uint64()),
    _c("service_name", "VARCHAR NOT NULL", _STR),
    _c("service_namespace", "VARCHAR", _STR),
    _c("telemetry_sdk_name", "VARCHAR", _STR),
    _c("metric_name", "VARCHAR NOT NULL", _STR),
    _c("side", "VARCHAR NOT NULL", _STR),
)


# A base-2 exponential histogram (storage/exponential.py); all NULL on an explicit-bucket row.
# An exponential row keeps bounds = [] and bucket_counts = [count] (everything in the +Inf bucket),
# so code that reads only the explicit columns still sees the right count.
def _exponential_columns(threshold: str) -> tuple[Column, ...]:
    return (
        _c("exp_scale", "TINYINT", pa.int8()),
        _c("exp_zero_count", "UBIGINT", pa.uint64()),
        _c(threshold, "DOUBLE", pa.float64()),
        _c("exp_positive_offset", "INTEGER", pa.int32()),
        _c("exp_positive_counts", "UBIGINT[]", pa.list_(pa.uint64())),
        _c("exp_negative_offset", "INTEGER", pa.int32()),
        _c("exp_negative_counts", "UBIGINT[]", pa.list_(pa.uint64())),
    )


EXPONENTIAL_COLUMNS = _exponential_columns("exp_zero_threshold_s")  # RED tables: seconds
OTHER_EXPONENTIAL_COLUMNS = _exponential_columns("exp_zero_threshold")  # otel_histograms: the row's unit

# One delta histogram per row: every bucket including +Inf, so len(bucket_counts) == len(bounds_s) + 1.
_DURATION_HISTOGRAM = (
    _c("unit", "VARCHAR NOT NULL", _STR),
    _c("count", "UBIGINT NOT NULL", pa.uint64()),
    _c("sum_s", "DOUBLE", pa.float64()),
    _c("min_s", "DOUBLE", pa.float64()),
    _c("max_s", "DOUBLE", pa.float64()),
    _c("bounds_s", "DOUBLE[] NOT NULL", pa.list_(pa.float64())),
    _c("bucket_counts", "UBIGINT[] NOT NULL", pa.list_(pa.uint64())),
    _c("source_temporality", "VARCHAR NOT NULL", _STR),
    _c("attributes", "JSON", _JSON),
    *EXPONENTIAL_COLUMNS,
)

_SERVER = (
    _c("server_address", "VARCHAR", _STR),
    _c("server_port", "INTEGER", pa.int32()),
    _c("error_type", "VARCHAR", _STR),
)

HTTP_METRICS = TableSpec(
    "beyla_http_metrics",
    (
        *_SOURCE,
        _c("http_method", "VARCHAR", _STR),
        _c("http_route", "VARCHAR", _STR),
        _c("http_status_code", "SMALLINT", pa.int16()),
        _c("url_scheme", "VARCHAR", _STR),
        *_SERVER,
        *_DURATION_HISTOGRAM,
    ),
    "timestamp",
)

GRPC_METRICS = TableSpec(
    "beyla_grpc_metrics",
    (
        *_SOURCE,
        _c("rpc_system", "VARCHAR", _STR),
        _c("grpc_method", "VARCHAR", _STR),
        _c("grpc_status_code", "SMALLINT", pa.int16()),
        *_SERVER,
        *_DURATION_HISTOGRAM,
    ),
    "timestamp",
)

SQL_METRICS = TableSpec(
    "beyla_sql_metrics",
    (
        *_SOURCE,
        _c("db_system", "VARCHAR", _STR),
        _c("sql_operation", "VARCHAR", _STR),
        _c("table_name", "VARCHAR", _STR),
        _c("db_namespace", "VARCHAR", _STR),
        *_SERVER,
        *_DURATION_HISTOGRAM,
    ),
    "timestamp",
)

MESSAGING_METRICS = TableSpec(
    "beyla_messaging_metrics",
    (
        *_SOURCE,
        _c("messaging_system", "VARCHAR", _STR),
        _c("destination", "VARCHAR", _STR),
        _c("operation", "VARCHAR", _STR),
        *_SERVER,
        *_DURATION_HISTOGRAM,
    ),
    "timestamp",
)

# Any other explicit-bucket histogram (request/response body sizes, runtime histograms, ...),
# stored in the unit it was sent in.
OTHER_HISTOGRAMS = TableSpec(
    "otel_histograms",
    (
        *_SOURCE,
        _c("unit", "VARCHAR NOT NULL", _STR),
        _c("count", "UBIGINT NOT NULL", pa.uint64()),
        _c("sum", "DOUBLE", pa.float64()),
        _c("min", "DOUBLE", pa.float64()),
        _c("max", "DOUBLE", pa.float64()),
        _c("bounds", "DOUBLE[] NOT NULL", pa.list_(pa.float64())),
        _c("bucket_counts", "UBIGINT[] NOT NULL", pa.list_(pa.uint64())),
        _c("source_temporality", "VARCHAR NOT NULL", _STR),
        _c("attributes", "JSON", _JSON),
        *OTHER_EXPONENTIAL_COLUMNS,
    ),
    "timestamp",
)

# Every span, once, with every OTLP field. Ids are stored as unsigned integers (trace id as
# its high and low 64 bits, big-endian): random hex text costs DuckDB ~8x more to insert and
# compare than integers. The views `otel_spans` and `beyla_traces` show them as hex text.
SPANS = TableSpec(
    "otel_spans_raw",
    (
        _c("trace_id_hi", "UBIGINT NOT NULL", pa.uint64()),
        _c("trace_id_lo", "UBIGINT NOT NULL", pa.uint64()),
        _c("span_id", "UBIGINT NOT NULL", pa.uint64()),
        _c("parent_span_id", "UBIGINT NOT NULL", pa.uint64()),  # 0 for a root span
        _c("trace_state", "VARCHAR", _STR),
        _c("flags", "UINTEGER", pa.uint32()),
        _c("agent_id", "VARCHAR NOT NULL", _STR),
        _c("resource_id", "UBIGINT NOT NULL", pa.uint64()),
        _c("service_name", "VARCHAR NOT NULL", _STR),
        _c("service_namespace", "VARCHAR", _STR),
        _c("process_pid", "INTEGER NOT NULL", pa.int32()),  # 0 when the resource has no process.pid
        _c("telemetry_sdk_name", "VARCHAR", _STR),
        _c("scope_name", "VARCHAR", _STR),
        _c("scope_version", "VARCHAR", _STR),
        _c("span_name", "VARCHAR NOT NULL", _STR),
        _c("span_kind", "VARCHAR NOT NULL", _STR),
        _c("start_time", "TIMESTAMP NOT NULL", _TS),
        _c("end_time", "TIMESTAMP NOT NULL", _TS),
        _c("duration_ns", "BIGINT NOT NULL", pa.int64()),
        _c("status_code", "SMALLINT NOT NULL", pa.int16()),  # OTel: 0 unset, 1 ok, 2 error
        _c("status_message", "VARCHAR", _STR),
        _c("http_method", "VARCHAR", _STR),
        _c("http_route", "VARCHAR", _STR),
        _c("http_status_code", "SMALLINT", pa.int16()),
        _c("rpc_method", "VARCHAR", _STR),
        _c("rpc_status_code", "SMALLINT", pa.int16()),
        _c("db_system", "VARCHAR", _STR),
        _c("db_operation", "VARCHAR", _STR),
        _c("attributes", "JSON", _JSON),
        _c("events", "JSON", _JSON),
        _c("links", "JSON", _JSON),
        _c("dropped_attributes_count", "UINTEGER", pa.uint32()),
        _c("dropped_events_count", "UINTEGER", pa.uint32()),
        _c("dropped_links_count", "UINTEGER", pa.uint32()),
    ),
    "start_time",
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (HTTP_METRICS, GRPC_METRICS, SQL_METRICS, MESSAGING_METRICS, OTHER_HISTOGRAMS, SPANS, RESOURCES)
}
METRIC_TABLES = tuple(name for name in TABLES if name not in (SPANS.name, RESOURCES.name))

# Spans produced by eBPF instrumentation: Beyla, OBI (its upstream) and the agent's own engine.
EBPF_SDK_NAMES = ("beyla", "opentelemetry-ebpf-instrumentation", "coral-ebpf")

_ARROW_SCHEMAS = {name: pa.schema([pa.field(c.name, c.arrow) for c in spec.columns]) for name, spec in TABLES.items()}


def arrow_schema(table: str) -> pa.Schema:
    return _ARROW_SCHEMAS[table]


def _create_table(spec: TableSpec) -> list[str]:
    columns = [f"{column.name} {column.sql}" for column in spec.columns]
    statements = []
    if spec.primary_key is not None:
        columns.append(f"PRIMARY KEY ({spec.primary_key})")
    else:
        columns.insert(0, f"seq_id UBIGINT NOT NULL DEFAULT nextval('seq_{spec.name}')")
        statements.append(f"CREATE SEQUENCE IF NOT EXISTS seq_{spec.name} START 1")
    body = ",\n  ".join(columns)
    statements.append(f"CREATE TABLE IF NOT EXISTS {spec.name} (\n  {body}\n)")
    return statements


_SDK_LIST = ", ".join(f"'{name}'" for name in EBPF_SDK_NAMES)

SPANS_VIEW = """
CREATE OR REPLACE VIEW otel_spans AS
SELECT s.seq_id,
       printf('%016x%016x', s.trace_id_hi, s.trace_id_lo) AS trace_id,
       printf('%016x', s.span_id) AS span_id,
       CASE WHEN s.parent_span_id = 0 THEN '' ELSE printf('%016x', s.parent_span_id) END AS parent_span_id,
       s.* EXCLUDE (seq_id, trace_id_hi, trace_id_lo, span_id, parent_span_id),
       r.service_instance_id,
       r.attributes AS resource_attributes
FROM otel_spans_raw AS s
LEFT JOIN otel_resources AS r USING (resource_id)
"""

# The Go agent's column names, so tools written for its beyla_traces table keep working.
# status_code is the OTel status (0 unset, 1 ok, 2 error), not an HTTP code; the protocol
# status is in http_status_code / rpc_status_code. seq_id is otel_spans_raw's: increasing,
# with gaps where spans from other senders sit.
BEYLA_TRACES_VIEW = f"""
CREATE OR REPLACE VIEW beyla_traces AS
SELECT seq_id, trace_id, span_id, parent_span_id, agent_id, service_name, span_name, span_kind,
       start_time, CAST(duration_ns // 1000 AS BIGINT) AS duration_us, status_code, status_message,
       http_status_code, rpc_status_code, process_pid, attributes, resource_attributes, telemetry_sdk_name
FROM otel_spans
WHERE telemetry_sdk_name IN ({_SDK_LIST})
"""


# The tables that hold EXPONENTIAL_COLUMNS (schema version 2 added them).
DURATION_TABLES = (HTTP_METRICS.name, GRPC_METRICS.name, SQL_METRICS.name, MESSAGING_METRICS.name)


def migration_statements(from_version: str) -> list[str]:
    """What brings a database of `from_version` to SCHEMA_VERSION (run before `ddl_statements`).

    Version 1 -> 2: the exponential-histogram columns, appended (NULL on every existing row).
    An unknown version gives no statements; the caller refuses such a file.
    """
    if from_version != "1":
        return []
    added = [(table, EXPONENTIAL_COLUMNS) for table in DURATION_TABLES]
    added.append((OTHER_HISTOGRAMS.name, OTHER_EXPONENTIAL_COLUMNS))
    return [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column.name} {column.sql}"
        for table, columns in added
        for column in columns
    ]


def ddl_statements() -> list[str]:
    statements = ["CREATE TABLE IF NOT EXISTS db_metadata (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)"]
    for spec in TABLES.values():
        statements += _create_table(spec)
    statements += [SPANS_VIEW, BEYLA_TRACES_VIEW]
    return statements


def arrow_array(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    """An Arrow array of `arrow_type` from Python values (extension types built on their storage)."""
    if isinstance(arrow_type, pa.ExtensionType):
        return pa.ExtensionArray.from_storage(arrow_type, pa.array(values, type=arrow_type.storage_type))
    return pa.array(values, type=arrow_type)
