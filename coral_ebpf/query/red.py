"""RED summaries (requests, rate, errors, duration percentiles) from the delta-histogram tables.

Per group (service, side and the protocol's keys): requests = sum of `count` over the rows
whose interval ends inside the window; errors = the same sum over rows that are errors by
the protocol's definition; percentiles = `histogram_quantile` over the bucket counts summed
per bound (PromQL: `histogram_quantile(q, sum by (le, ...) (increase(..._bucket[w])))`), or,
for rows holding exponential histograms, the quantile of their merge (quantile.Distribution).
Each `pNN_ms` comes with `pNN_bound` ("upper", "lower" or null) and `pNN_bound_ms`: an
explicit-bucket percentile in the lowest bucket is only known to be at most that bucket's
upper bound ("upper"), one in the +Inf bucket only to be above the largest bound ("lower").
Rate = requests / seconds from the later of the window start and the group's first interval
start, to the window end.

When a protocol has no metric rows in the window, its RED comes from the stored spans instead
(span_red.py: Beyla sends SQL only as spans); `source` says which: "metrics" or "spans".
Metrics win whenever they exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import duckdb

from coral_ebpf.query.buckets import explicit_only, exponential_rows
from coral_ebpf.query.params import QueryError, RedParams
from coral_ebpf.query.quantile import Distribution, Quantile
from coral_ebpf.query.span_red import SPAN_SOURCES, all_durations, span_groups
from coral_ebpf.storage.retention import utc_naive

QUANTILES = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}


@dataclass(frozen=True)
class Protocol:
    table: str
    keys: tuple[tuple[str, str], ...]  # (output key, column)
    error_sql: str
    default_side: str
    route_column: str | None = None
    method_column: str | None = None
    operation_column: str | None = None
    table_column: str | None = None


_SERVICE_KEYS = (("service", "service_name"), ("side", "side"))

PROTOCOLS: dict[str, Protocol] = {
    # HTTP: a server fails on 5xx; a client also on 4xx (OTel semconv span status rules).
    # Status 0 means no response was seen, which Beyla reports as an error too.
    "http": Protocol(
        table="beyla_http_metrics",
        keys=(*_SERVICE_KEYS, ("method", "http_method"), ("route", "http_route")),
        error_sql=(
            "coalesce(http_status_code >= CASE WHEN side = 'server' THEN 500 ELSE 400 END, false) "
            "OR coalesce(http_status_code = 0, false) OR error_type IS NOT NULL"
        ),
        default_side="server",
        route_column="http_route",
        method_column="http_method",
    ),
    # gRPC: any status other than OK (0).
    "grpc": Protocol(
        table="beyla_grpc_metrics",
        keys=(*_SERVICE_KEYS, ("method", "grpc_method")),
        error_sql="coalesce(grpc_status_code <> 0, false) OR error_type IS NOT NULL",
        default_side="server",
        route_column="grpc_method",
        method_column="grpc_method",
    ),
    # SQL (and every db.* system): the call carries error.type.
    "sql": Protocol(
        table="beyla_sql_metrics",
        keys=(*_SERVICE_KEYS, ("db_system", "db_system"), ("operation", "sql_operation"), ("table", "table_name")),
        error_sql="error_type IS NOT NULL",
        default_side="client",
        operation_column="sql_operation",
        table_column="table_name",
    ),
    "messaging": Protocol(
        table="beyla_messaging_metrics",
        keys=(
            *_SERVICE_KEYS,
            ("system", "messaging_system"),
            ("operation", "operation"),
            ("destination", "destination"),
        ),
        error_sql="error_type IS NOT NULL",
        default_side="all",
        operation_column="operation",
        table_column="destination",
    ),
}


def _match(column: str, value: str, args: dict[str, Any], name: str) -> str:
    args[name] = value
    return f"{column} GLOB ${name}" if any(c in value for c in "*?[") else f"{column} = ${name}"


def _filters(protocol: Protocol, params: RedParams, start: float, end: float) -> tuple[str, dict[str, Any]]:
    args: dict[str, Any] = {"window_start": utc_naive(start), "window_end": utc_naive(end)}
    clauses = ["timestamp > $window_start", "timestamp <= $window_end"]
    side = params.side or protocol.default_side
    if side != "all":
        clauses.append("side = $side")
        args["side"] = side
    if params.service:
        clauses.append(_match("service_name", params.service, args, "service"))
    if params.agent:
        clauses.append(_match("agent_id", params.agent, args, "agent"))
    filters = (
        (protocol.route_column, params.route, "route"),
        (protocol.method_column, params.method, "method"),
        (protocol.operation_column, params.operation, "operation"),
        (protocol.table_column, params.table, "table_filter"),
    )
    for column, value, name in filters:
        if value:
            if column is None:
                raise QueryError(f"the {name!r} filter does not apply to {protocol.table}")
            clauses.append(_match(column, value, args, name))
    return " AND ".join(clauses), args


def bound_key(key: str) -> str:
    """ "p99_ms" -> "p99_bound" (its "_ms" twin is "p99_bound_ms")."""
    return key.removesuffix("_ms") + "_bound"


def _milliseconds(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value * 1000.0, 6)


def quantile_fields(key: str, quantile: Quantile) -> dict[str, Any]:
    """`key` (e.g. "p99_ms") with its bound flag and the bound itself, in milliseconds."""
    return {
        key: _milliseconds(quantile.value),
        bound_key(key): None if quantile.bound_kind is None else quantile.bound_kind.value,
        bound_key(key) + "_ms": _milliseconds(quantile.bound),
    }


def _quantiles(distribution: Distribution) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, q in QUANTILES.items():
        result.update(quantile_fields(key, distribution.quantile(q)))
    return result


def _rate(requests: int, first_start: float | None, start: float, end: float) -> float:
    covered = end - max(start, first_start if first_start is not None else start)
    return round(requests / max(covered, 1.0), 6)


# Other groupings than the protocol's keys (params.group), for the protocols that have them.
_GROUPINGS: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "http": {
        "route": (("method", "http_method"), ("route", "http_route")),
        "method": (("method", "http_method"),),
        "status": (("status_code", "http_status_code"),),
        "service": (),
    },
    "grpc": {
        "route": (("method", "grpc_method"),),
        "method": (("method", "grpc_method"),),
        "status": (("status_code", "grpc_status_code"),),
        "service": (),
    },
}


def _grouped(kind: str, protocol: Protocol, group: str | None) -> Protocol:
    if group is None:
        return protocol
    groupings = _GROUPINGS.get(kind)
    if groupings is None:
        raise QueryError(f"group: {kind} rows cannot be regrouped (only http and grpc)")
    return replace(protocol, keys=(*_SERVICE_KEYS, *groupings[group]))


def red_summary(connection: duckdb.DuckDBPyConnection, kind: str, params: RedParams) -> dict[str, Any]:
    """Rows per group plus an overall line, JSON-ready."""
    protocol = _grouped(kind, PROTOCOLS[kind], params.group)
    start, end = params.window()
    where, args = _filters(protocol, params, start, end)
    columns = [column for _, column in protocol.keys]
    group_sql = ", ".join(columns)
    totals = connection.execute(
        f"SELECT {group_sql}, sum(count)::HUGEINT, (sum(count) FILTER (WHERE {protocol.error_sql}))::HUGEINT, "
        f"epoch_us(min(start_time)) FROM {protocol.table} WHERE {where} GROUP BY ALL",
        args,
    ).fetchall()
    buckets = connection.execute(
        f"SELECT {group_sql}, bounds_s, idx, sum(c) FROM (SELECT {group_sql}, bounds_s, "
        f"unnest(bucket_counts) AS c, generate_subscripts(bucket_counts, 1) AS idx "
        f"FROM {protocol.table} WHERE {where} AND {explicit_only(connection, protocol.table)}) GROUP BY ALL",
        args,
    ).fetchall()
    if not totals and kind in SPAN_SOURCES:
        from_spans = _span_summary(connection, kind, params, window=(start, end), where=where, args=args)
        if from_spans is not None:
            return from_spans
    width = len(columns)
    distributions: dict[tuple[Any, ...], Distribution] = {}
    for row in buckets:
        group, bounds, index, total = tuple(row[:width]), tuple(row[width]), row[width + 1], row[width + 2]
        distributions.setdefault(group, Distribution()).add_bucket(bounds, index - 1, float(total))
    for group, exponential_point in exponential_rows(connection, protocol.table, columns, where, args):
        distributions.setdefault(group, Distribution()).exponential.append(exponential_point)
    rows = []
    everything = Distribution()
    first_starts: list[float] = []
    for row in totals:
        group = tuple(row[:width])
        requests, errors, first_start_us = int(row[width] or 0), int(row[width + 1] or 0), row[width + 2]
        distribution = distributions.get(group, Distribution())
        distribution.compact()
        everything.add(distribution)
        first_start = None if first_start_us is None else first_start_us / 1e6
        if first_start is not None:
            first_starts.append(first_start)
        record: dict[str, Any] = {key: value for (key, _), value in zip(protocol.keys, group, strict=True)}
        record.update(_measures(requests, errors, distribution, first_start, (start, end)))
        record["source"] = "metrics"
        rows.append(record)
    rows.sort(key=lambda r: (r["service"], -r["requests"], *(str(r[k] or "") for k, _ in protocol.keys[2:])))
    requests = sum(r["requests"] for r in rows)
    errors = sum(r["errors"] for r in rows)
    overall = _measures(requests, errors, everything, min(first_starts, default=None), (start, end))
    result: dict[str, Any] = {
        "kind": kind,
        "rows": rows,
        "overall": overall,
        "window": {"start": start, "end": end, "seconds": end - start},
        "side": params.side or protocol.default_side,
        "source": "metrics",
    }
    if not rows:
        result["services_available"] = services_available(connection, protocol.table)
    return result


def _span_summary(
    connection: duckdb.DuckDBPyConnection,
    kind: str,
    params: RedParams,
    *,
    window: tuple[float, float],
    where: str,
    args: dict[str, Any],
) -> dict[str, Any] | None:
    """The summary from stored spans (span_red.py), or None when there are none either."""
    protocol = PROTOCOLS[kind]
    columns = [column for _, column in protocol.keys]
    groups = span_groups(connection, kind, columns=columns, where=where, error_sql=protocol.error_sql, args=args)
    if not groups:
        return None
    width = len(columns)
    rows = []
    for row in groups:
        requests, errors = int(row[width]), int(row[width + 1])
        first_start_us, quantiles = row[width + 2], row[width + 3]
        first_start = None if first_start_us is None else first_start_us / 1e6
        record: dict[str, Any] = {key: value for (key, _), value in zip(protocol.keys, row[:width], strict=True)}
        record.update(_exact_measures(requests, errors, quantiles, first_start, window))
        record["source"] = "spans"
        rows.append(record)
    rows.sort(key=lambda r: (r["service"], -r["requests"], *(str(r[k] or "") for k, _ in protocol.keys[2:])))
    first = [row[width + 2] / 1e6 for row in groups if row[width + 2] is not None]
    overall = _exact_measures(
        sum(r["requests"] for r in rows),
        sum(r["errors"] for r in rows),
        all_durations(connection, kind, where, args),
        min(first, default=None),
        window,
    )
    start, end = window
    return {
        "kind": kind,
        "rows": rows,
        "overall": overall,
        "window": {"start": start, "end": end, "seconds": end - start},
        "side": params.side or protocol.default_side,
        "source": "spans",
    }


def _exact_measures(
    requests: int, errors: int, quantiles: list[float] | None, first_start: float | None, window: tuple[float, float]
) -> dict[str, Any]:
    start, end = window
    values: list[float | None] = list(quantiles) if quantiles else [None, None, None]
    measures: dict[str, Any] = {
        "requests": requests,
        "rate_per_s": _rate(requests, first_start, start, end),
        "errors": errors,
        "error_rate": round(errors / requests, 6) if requests else 0.0,
    }
    for key, value in zip(QUANTILES, values, strict=True):
        measures.update(quantile_fields(key, Quantile(None if value is None else float(value))))
    return measures


def _measures(
    requests: int,
    errors: int,
    distribution: Distribution,
    first_start: float | None,
    window: tuple[float, float],
) -> dict[str, Any]:
    start, end = window
    return {
        "requests": requests,
        "rate_per_s": _rate(requests, first_start, start, end),
        "errors": errors,
        "error_rate": round(errors / requests, 6) if requests else 0.0,
        **_quantiles(distribution),
    }


def services_available(connection: duckdb.DuckDBPyConnection, table: str) -> list[dict[str, Any]]:
    """Every service with rows in `table` (any time still retained), to help fix a wrong --service."""
    # Only finite times: a row stored as `infinity` by an older version has no epoch.
    rows = connection.execute(
        f"SELECT service_name, side, epoch_us(max(timestamp) FILTER (WHERE isfinite(timestamp))) "
        f"FROM {table} GROUP BY ALL ORDER BY 1, 2"
    ).fetchall()
    return [
        {"service": name, "side": side, "last_seen": None if last is None else last / 1e6} for name, side, last in rows
    ]
