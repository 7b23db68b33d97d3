"""RED summaries (requests, rate, errors, duration percentiles) from the delta-histogram tables.

Per group (service, side and the protocol's keys): requests = sum of `count` over the rows
whose interval ends inside the window; errors = the same sum over rows that are errors by
the protocol's definition; percentiles = `histogram_quantile` over the bucket counts summed
per bound (PromQL: `histogram_quantile(q, sum by (le, ...) (increase(..._bucket[w])))`), or,
for rows holding exponential histograms, the quantile of their merge (quantile.Distribution).
Each `pNN_ms` comes with `pNN_bound` ("upper", "lower" or null) and `pNN_bound_ms`: an
explicit-bucket percentile in the lowest bucket is only known to be at most that bucket's
upper bound ("upper"), one in the +Inf bucket only to be above the largest bound ("lower").
Rate = requests / the seconds of the window covered by data, one denominator for every row of an
answer (as PromQL's `rate` divides every series by the same range): from the later of the window
start and the earliest interval start stored for the protocol in the window (any service, route
or side, so a filter never changes a row's rate; only a colony's `agent` filter narrows it, since
it picks the data source), to the window end. An agent that started 2 minutes ago therefore
divides by about 120 s, not by the 15 minutes asked for; a route that only saw traffic in the last
10 s is still divided by the whole covered span, so rows of one table compare.

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
    status_column: str | None = None  # HTTP's status code: the --status filter and the 4xx count


_SERVICE_KEYS = (("service", "service_name"), ("side", "side"))

PROTOCOLS: dict[str, Protocol] = {
    # HTTP: a server fails on 5xx; a client also on 4xx (OTel semconv span status rules).
    # Status 0 means no response was seen, which Beyla reports as an error too. 4xx answers are
    # counted apart (`status_4xx`): the client's mistake, not the server's failure.
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
        status_column="http_status_code",
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
    if params.instance:
        clauses.append(_match("service_instance_id", params.instance, args, "instance"))
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
    if params.status:
        if protocol.status_column is None:
            raise QueryError(f"the 'status' filter does not apply to {protocol.table} (HTTP only)")
        clauses.append(_status_clause(protocol.status_column, params.status, args))
    return " AND ".join(clauses), args


def _status_clause(column: str, status: str, args: dict[str, Any]) -> str:
    """`2xx` is 200 to 299; a code such as `404` is that code (RedParams checked the form)."""
    if status.endswith("xx"):
        args["status_low"] = int(status[0]) * 100
        return f"{column} >= $status_low AND {column} < $status_low + 100"
    args["status_code"] = int(status)
    return f"{column} = $status_code"


def _four_xx_sql(protocol: Protocol) -> str:
    column = protocol.status_column
    return "false" if column is None else f"coalesce({column} >= 400 AND {column} < 500, false)"


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


def covered_seconds(coverage_start: float | None, start: float, end: float) -> float:
    """Seconds of [start, end] the data covers (at least 1 s, so a burst in the first second is not infinite)."""
    covered = end - max(start, coverage_start if coverage_start is not None else start)
    return max(covered, 1.0)


def coverage_start(
    connection: duckdb.DuckDBPyConnection, source: str, params: RedParams, start: float, end: float
) -> float | None:
    """The earliest interval start (unix s) in `source` among rows ending in the window; None if no rows.

    Only the window and the colony's `agent` filter apply: the coverage is the data source's, so
    every row of an answer, filtered or not, shares one denominator.
    """
    args: dict[str, Any] = {"window_start": utc_naive(start), "window_end": utc_naive(end)}
    where = "timestamp > $window_start AND timestamp <= $window_end"
    if params.agent:
        where += " AND " + _match("agent_id", params.agent, args, "agent")
    row = connection.execute(f"SELECT epoch_us(min(start_time)) FROM {source} WHERE {where}", args).fetchone()
    return None if row is None or row[0] is None else row[0] / 1e6


def _rate(requests: int, seconds: float) -> float:
    return round(requests / seconds, 6)


# Other groupings than the protocol's keys (params.group), for the protocols that have them.
_GROUPINGS: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "http": {
        "route": (("method", "http_method"), ("route", "http_route")),
        "method": (("method", "http_method"),),
        "status": (("status_code", "http_status_code"),),
        "service": (),
        "agent": (("agent", "agent_id"),),  # per service and the agent that stored the rows (a colony's)
    },
    "grpc": {
        "route": (("method", "grpc_method"),),
        "method": (("method", "grpc_method"),),
        "status": (("status_code", "grpc_status_code"),),
        "service": (),
        "agent": (("agent", "agent_id"),),
    },
}


# The default rows also tell a service's instances (processes) apart: one row per instance.
INSTANCE_KEY = ("instance", "service_instance_id")


def with_instance(table: str) -> str:
    """A metrics table with its rows' service.instance.id (kept once per resource in otel_resources)."""
    return (
        f"(SELECT m.*, r.service_instance_id FROM {table} AS m "
        "LEFT JOIN otel_resources AS r USING (resource_id)) AS metrics"
    )


def _grouped(kind: str, protocol: Protocol, group: str | None) -> Protocol:
    if group is None:
        return protocol
    groupings = _GROUPINGS.get(kind)
    if groupings is None:
        raise QueryError(f"group: {kind} rows cannot be regrouped (only http and grpc)")
    return replace(protocol, keys=(*_SERVICE_KEYS, *groupings[group]))


def red_summary(connection: duckdb.DuckDBPyConnection, kind: str, params: RedParams) -> dict[str, Any]:
    """Rows per group plus an overall line, JSON-ready.

    With the protocol's own keys (no `group`), each row is also one service instance's, and
    `instance` holds its service.instance.id (None when the sender gave none)."""
    protocol = _grouped(kind, PROTOCOLS[kind], params.group)
    if params.group is None:
        protocol = replace(protocol, keys=(*protocol.keys, INSTANCE_KEY))
    start, end = params.window()
    where, args = _filters(protocol, params, start, end)
    columns = [column for _, column in protocol.keys]
    group_sql = ", ".join(columns)
    totals = connection.execute(
        f"SELECT {group_sql}, sum(count)::HUGEINT, (sum(count) FILTER (WHERE {protocol.error_sql}))::HUGEINT, "
        f"(sum(count) FILTER (WHERE {_four_xx_sql(protocol)}))::HUGEINT "
        f"FROM {with_instance(protocol.table)} WHERE {where} GROUP BY ALL",
        args,
    ).fetchall()
    buckets = connection.execute(
        f"SELECT {group_sql}, bounds_s, idx, sum(c) FROM (SELECT {group_sql}, bounds_s, "
        f"unnest(bucket_counts) AS c, generate_subscripts(bucket_counts, 1) AS idx "
        f"FROM {with_instance(protocol.table)} WHERE {where} AND {explicit_only(connection, protocol.table)}) "
        "GROUP BY ALL",
        args,
    ).fetchall()
    if not totals and kind in SPAN_SOURCES:
        from_spans = _span_summary(connection, kind, params, window=(start, end), where=where, args=args)
        if from_spans is not None:
            return from_spans
    seconds = covered_seconds(coverage_start(connection, protocol.table, params, start, end), start, end)
    width = len(columns)
    distributions: dict[tuple[Any, ...], Distribution] = {}
    for row in buckets:
        group, bounds, index, total = tuple(row[:width]), tuple(row[width]), row[width + 1], row[width + 2]
        distributions.setdefault(group, Distribution()).add_bucket(bounds, index - 1, float(total))
    for group, exponential_point in exponential_rows(
        connection, protocol.table, columns, where, args, source=with_instance(protocol.table)
    ):
        distributions.setdefault(group, Distribution()).exponential.append(exponential_point)
    rows = []
    everything = Distribution()
    for row in totals:
        group = tuple(row[:width])
        requests, errors = int(row[width] or 0), int(row[width + 1] or 0)
        distribution = distributions.get(group, Distribution())
        distribution.compact()
        everything.add(distribution)
        record: dict[str, Any] = {key: value for (key, _), value in zip(protocol.keys, group, strict=True)}
        record.update(_measures(requests, errors, distribution, seconds))
        if protocol.status_column:
            record["status_4xx"] = int(row[width + 2] or 0)
        record["source"] = "metrics"
        rows.append(record)
    rows.sort(key=lambda r: (r["service"], -r["requests"], *(str(r[k] or "") for k, _ in protocol.keys[2:])))
    requests = sum(r["requests"] for r in rows)
    errors = sum(r["errors"] for r in rows)
    everything.compact()
    overall = _measures(requests, errors, everything, seconds)
    if protocol.status_column:
        overall["status_4xx"] = sum(r["status_4xx"] for r in rows)
    result: dict[str, Any] = {
        "kind": kind,
        "rows": rows,
        "overall": overall,
        "window": {"start": start, "end": end, "seconds": end - start, "covered_seconds": seconds},
        "side": params.side or protocol.default_side,
        "source": "metrics",
    }
    if not rows:
        result["services_available"] = services_available(connection, protocol.table)
    return result


def overall_by(
    connection: duckdb.DuckDBPyConnection, kind: str, params: RedParams, column: str, key: str
) -> list[dict[str, Any]] | None:
    """`red_summary`'s overall line once per value of `column` (a colony's `agent_id`), in one pass.

    Each value's histograms add up across every group before its percentiles, exactly as the
    overall line of `red_summary` with that value as a filter. None when no metric row matched
    (a span-derived summary has its own path: ask `red_summary` per value then).
    """
    protocol = _grouped(kind, PROTOCOLS[kind], params.group)
    start, end = params.window()
    where, args = _filters(protocol, params, start, end)
    totals = connection.execute(
        f"SELECT {column}, sum(count)::HUGEINT, (sum(count) FILTER (WHERE {protocol.error_sql}))::HUGEINT, "
        f"(sum(count) FILTER (WHERE {_four_xx_sql(protocol)}))::HUGEINT "
        f"FROM {with_instance(protocol.table)} WHERE {where} GROUP BY ALL ORDER BY 1",
        args,
    ).fetchall()
    if not totals:
        return None
    source = with_instance(protocol.table)
    buckets = connection.execute(
        f"SELECT {column}, bounds_s, idx, sum(c) FROM (SELECT {column}, bounds_s, "
        f"unnest(bucket_counts) AS c, generate_subscripts(bucket_counts, 1) AS idx "
        f"FROM {source} WHERE {where} AND {explicit_only(connection, protocol.table)}) GROUP BY ALL",
        args,
    ).fetchall()
    distributions: dict[Any, Distribution] = {}
    for value, bounds, index, total in buckets:
        distributions.setdefault(value, Distribution()).add_bucket(tuple(bounds), index - 1, float(total))
    for (value,), exponential_point in exponential_rows(
        connection, protocol.table, [column], where, args, source=source
    ):
        distributions.setdefault(value, Distribution()).exponential.append(exponential_point)
    # Each value's rate has the denominator red_summary would give with that value as the agent
    # filter: the coverage of the value's rows in the window, whatever the other filters.
    window_args: dict[str, Any] = {"window_start": utc_naive(start), "window_end": utc_naive(end)}
    coverage = dict(
        connection.execute(
            f"SELECT {column}, epoch_us(min(start_time)) FROM {protocol.table} "
            "WHERE timestamp > $window_start AND timestamp <= $window_end GROUP BY ALL",
            window_args,
        ).fetchall()
    )
    lines = []
    for value, requests, errors, four_xx in totals:
        distribution = distributions.get(value, Distribution())
        distribution.compact()
        covered_from_us = coverage.get(value)
        seconds = covered_seconds(None if covered_from_us is None else covered_from_us / 1e6, start, end)
        measures = _measures(int(requests or 0), int(errors or 0), distribution, seconds)
        if protocol.status_column:
            measures["status_4xx"] = int(four_xx or 0)
        lines.append({key: value, **measures})
    return lines


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
    if params.group is None:
        protocol = replace(protocol, keys=(*protocol.keys, INSTANCE_KEY))
    columns = [column for _, column in protocol.keys]
    groups = span_groups(
        connection,
        kind,
        columns=columns,
        where=where,
        error_sql=protocol.error_sql,
        four_xx_sql=_four_xx_sql(protocol),
        args=args,
    )
    if not groups:
        return None
    start, end = window
    seconds = covered_seconds(coverage_start(connection, f"({SPAN_SOURCES[kind]})", params, start, end), start, end)
    width = len(columns)
    rows = []
    for row in groups:
        requests, errors, four_xx, quantiles = int(row[width]), int(row[width + 1]), int(row[width + 2]), row[width + 3]
        record: dict[str, Any] = {key: value for (key, _), value in zip(protocol.keys, row[:width], strict=True)}
        record.update(_exact_measures(requests, errors, quantiles, seconds))
        if protocol.status_column:
            record["status_4xx"] = four_xx
        record["source"] = "spans"
        rows.append(record)
    rows.sort(key=lambda r: (r["service"], -r["requests"], *(str(r[k] or "") for k, _ in protocol.keys[2:])))
    overall = _exact_measures(
        sum(r["requests"] for r in rows),
        sum(r["errors"] for r in rows),
        all_durations(connection, kind, where, args),
        seconds,
    )
    if protocol.status_column:
        overall["status_4xx"] = sum(r["status_4xx"] for r in rows)
    return {
        "kind": kind,
        "rows": rows,
        "overall": overall,
        "window": {"start": start, "end": end, "seconds": end - start, "covered_seconds": seconds},
        "side": params.side or protocol.default_side,
        "source": "spans",
    }


def _exact_measures(requests: int, errors: int, quantiles: list[float] | None, seconds: float) -> dict[str, Any]:
    values: list[float | None] = list(quantiles) if quantiles else [None, None, None]
    measures: dict[str, Any] = {
        "requests": requests,
        "rate_per_s": _rate(requests, seconds),
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
    seconds: float,
) -> dict[str, Any]:
    """RED of one group; `seconds` is the answer's covered window (the rate's denominator)."""
    return {
        "requests": requests,
        "rate_per_s": _rate(requests, seconds),
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
