"""RED over time: the window cut into buckets of `by` seconds, each measured as `red_summary` does.

Bucket i covers (start + i*by, start + (i+1)*by], with the same rule as the summary: a metric
row counts in the bucket its interval ends in. A bucket's rate divides by the seconds of it the
data covers (red.py's rule: from the protocol's earliest interval start in the window), the same
for every series, so only the bucket the data starts in is shorter. Each bucket holds requests, rate, errors, error
rate and p50/p95/p99 (histogram_quantile over the bucket counts summed per bound), once for
everything that matched ("buckets") and once per group of the protocol's keys ("series"),
so a chart per route/method and a sparkline of the total come from one query.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

from coral_ebpf.query.buckets import explicit_only, exponential_rows
from coral_ebpf.query.params import RedParams
from coral_ebpf.query.quantile import Distribution
from coral_ebpf.query.red import (
    PROTOCOLS,
    _filters,
    _grouped,
    _measures,
    coverage_start,
    covered_seconds,
    with_instance,
)

_Group = tuple[Any, ...]


@dataclass
class _Cell:
    """What one (group, bucket) accumulates before it is measured."""

    requests: int = 0
    errors: int = 0
    distribution: Distribution = field(default_factory=Distribution)

    def add(self, other: _Cell) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.distribution.add(other.distribution)

    def measure(self, bucket_start: float, bucket_end: float, covered_from: float | None) -> dict[str, Any]:
        self.distribution.compact()
        seconds = covered_seconds(covered_from, bucket_start, bucket_end)
        measures = _measures(self.requests, self.errors, self.distribution, seconds)
        return {"start": bucket_start, "end": bucket_end, **measures}


def red_timeline(connection: duckdb.DuckDBPyConnection, kind: str, params: RedParams) -> dict[str, Any]:
    """{"kind", "by", "window", "side", "buckets": [...], "series": [{keys..., "buckets": [...]}]}, JSON-ready.

    Every bucket of the window appears, empty ones with zero requests and no percentiles.
    """
    assert params.by is not None, "red_timeline needs params.by"
    protocol = _grouped(kind, PROTOCOLS[kind], params.group)
    start, end = params.window()
    by = params.by
    count = max(1, math.ceil((end - start) / by - 1e-9))
    where, args = _filters(protocol, params, start, end)
    args.update(origin_us=int(start * 1e6), by_us=int(by * 1e6))
    bucket_sql = "greatest(ceil((epoch_us(timestamp) - $origin_us) / $by_us)::BIGINT - 1, 0)"
    columns = [column for _, column in protocol.keys]
    group_sql = ", ".join(columns)
    totals = connection.execute(
        f"SELECT {group_sql}, {bucket_sql} AS bucket, sum(count)::UBIGINT, "
        f"(sum(count) FILTER (WHERE {protocol.error_sql}))::UBIGINT "
        f"FROM {with_instance(protocol.table)} WHERE {where} GROUP BY ALL",
        args,
    ).fetchall()
    bucket_rows = connection.execute(
        f"SELECT {group_sql}, bucket, bounds_s, idx, sum(c) FROM (SELECT {group_sql}, {bucket_sql} AS bucket, "
        f"bounds_s, unnest(bucket_counts) AS c, generate_subscripts(bucket_counts, 1) AS idx "
        f"FROM {with_instance(protocol.table)} WHERE {where} AND {explicit_only(connection, protocol.table)}) "
        "GROUP BY ALL",
        args,
    ).fetchall()
    exponential = exponential_rows(
        connection, protocol.table, [*columns, bucket_sql], where, args, source=with_instance(protocol.table)
    )
    width = len(columns)
    cells: dict[_Group, dict[int, _Cell]] = {}
    for row in totals:
        group, bucket = tuple(row[:width]), min(int(row[width]), count - 1)
        cell = cells.setdefault(group, {}).setdefault(bucket, _Cell())
        cell.add(_Cell(requests=int(row[width + 1] or 0), errors=int(row[width + 2] or 0)))
    for row in bucket_rows:
        group, bucket = tuple(row[:width]), min(int(row[width]), count - 1)
        bounds, index, total = tuple(row[width + 1]), row[width + 2], row[width + 3]
        cell = cells.setdefault(group, {}).setdefault(bucket, _Cell())
        cell.distribution.add_bucket(bounds, index - 1, float(total))
    for key, buckets in exponential:
        group, bucket = key[:width], min(int(key[width]), count - 1)
        cells.setdefault(group, {}).setdefault(bucket, _Cell()).distribution.exponential.append(buckets)
    covered_from = coverage_start(connection, protocol.table, params, start, end)
    edges = [(start + i * by, min(start + (i + 1) * by, end)) for i in range(count)]
    overall = [_Cell() for _ in range(count)]
    series = []
    for group in sorted(cells, key=lambda g: tuple(str(v or "") for v in g)):
        record: dict[str, Any] = {key: value for (key, _), value in zip(protocol.keys, group, strict=True)}
        by_bucket = cells[group]
        for bucket, cell in by_bucket.items():
            overall[bucket].add(cell)
        record["buckets"] = _measured(by_bucket, edges, covered_from)
        record["requests"] = sum(cell.requests for cell in by_bucket.values())
        series.append(record)
    series.sort(key=lambda r: (r["service"], -r["requests"]))
    return {
        "kind": kind,
        "by": by,
        "window": {"start": start, "end": end, "seconds": end - start},
        "side": params.side or protocol.default_side,
        "buckets": _measured(dict(enumerate(overall)), edges, covered_from),
        "series": series,
    }


def _measured(
    cells: dict[int, _Cell], edges: Sequence[tuple[float, float]], covered_from: float | None
) -> list[dict[str, Any]]:
    return [
        cells.get(i, _Cell()).measure(bucket_start, bucket_end, covered_from)
        for i, (bucket_start, bucket_end) in enumerate(edges)
    ]
