"""Running cumulative RED histograms, fed with the delta rows the storage writer commits.

`/metrics` must show counters that only go up while the agent runs, whatever retention
deletes from the database, so the totals live here, in memory, and are never re-summed from a
table. `observe` is called with the Arrow tables of each committed write (the writer's thread);
`families` is called by a scrape (the listener's thread).

Naming follows the OpenTelemetry-to-Prometheus conventions: the OTel metric name with dots as
underscores and the unit as a suffix (`http.server.request.duration` in s →
`http_server_request_duration_seconds`), attribute names the same way (`http.route` →
`http_route`). A restart starts every series from zero again, which Prometheus handles as a
counter reset.

Bucket layouts: a series keeps the bounds of its first row. A later row with other bounds
(a sender changed its buckets) is folded in by moving each of its buckets to the first of the
series' buckets whose bound is at or above the row's bucket's upper bound: counts stay exact,
only that row's resolution is lost. A row holding an exponential histogram (the `exp_*`
columns) is folded the same way, bucket by bucket, into the series' layout, and a series that
starts with one gets the OpenTelemetry default duration bounds (`EXPONENTIAL_FALLBACK_BOUNDS`):
the Prometheus text format has no exponential histograms (native histograms need protobuf), so
/metrics keeps exact counts and sums at the resolution of explicit buckets, while `query`
reads the exponential buckets themselves. The number of series is capped (`MAX_SERIES`); rows of
series beyond the cap are counted in `coral_ebpf_red_series_overflow_total`, never silently.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coral_ebpf.telemetry.exposition import Histogram, Labels, MetricFamily, MetricType, Sample

MAX_SERIES = 200_000
# The bounds /metrics gives a series that starts with an exponential row (OTel semconv's defaults).
EXPONENTIAL_FALLBACK_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

_COMMON = (("service_name", "service_name"), ("service_namespace", "service_namespace"))


@dataclass(frozen=True)
class RedTable:
    """How one RED table becomes Prometheus histograms: family per side, labels from columns."""

    table: str
    families: Mapping[str, str]  # side -> family name
    labels: tuple[tuple[str, str], ...]  # (Prometheus label, column)
    help: str


RED_TABLES: tuple[RedTable, ...] = (
    RedTable(
        "beyla_http_metrics",
        {"server": "http_server_request_duration_seconds", "client": "http_client_request_duration_seconds"},
        (
            *_COMMON,
            ("http_request_method", "http_method"),
            ("http_route", "http_route"),
            ("http_response_status_code", "http_status_code"),
            ("error_type", "error_type"),
        ),
        "Duration of HTTP {side} requests (OTel http.{side}.request.duration), cumulative since the agent started.",
    ),
    RedTable(
        "beyla_grpc_metrics",
        {"server": "rpc_server_duration_seconds", "client": "rpc_client_duration_seconds"},
        (
            *_COMMON,
            ("rpc_system", "rpc_system"),
            ("rpc_method", "grpc_method"),
            ("rpc_grpc_status_code", "grpc_status_code"),
            ("error_type", "error_type"),
        ),
        "Duration of RPC {side} calls (OTel rpc.{side}.duration), cumulative since the agent started.",
    ),
    RedTable(
        "beyla_sql_metrics",
        {"client": "db_client_operation_duration_seconds", "server": "db_server_operation_duration_seconds"},
        (
            *_COMMON,
            ("db_system", "db_system"),
            ("db_operation_name", "sql_operation"),
            ("db_collection_name", "table_name"),
            ("db_namespace", "db_namespace"),
            ("error_type", "error_type"),
        ),
        "Duration of database {side} operations (OTel db.client.operation.duration), cumulative since the agent "
        "started.",
    ),
    RedTable(
        "beyla_messaging_metrics",
        {"client": "messaging_client_operation_duration_seconds", "server": "messaging_process_duration_seconds"},
        (
            *_COMMON,
            ("messaging_system", "messaging_system"),
            ("messaging_operation_name", "operation"),
            ("messaging_destination_name", "destination"),
            ("error_type", "error_type"),
        ),
        "Duration of messaging {side} operations (OTel messaging.*.duration), cumulative since the agent started.",
    ),
)

_BY_TABLE = {spec.table: spec for spec in RED_TABLES}

# Every family name this module can export (for dashboards and their validation).
RED_FAMILY_NAMES: tuple[str, ...] = tuple(name for spec in RED_TABLES for name in spec.families.values())


class _Series:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def add(self, bounds: tuple[float, ...], counts: list[int], total: float) -> None:
        mine = self.counts
        if bounds == self.bounds:
            for index, value in enumerate(counts):
                mine[index] += value
        else:
            last = len(self.bounds)
            for index, value in enumerate(counts):
                if value:
                    upper = bounds[index] if index < len(bounds) else float("inf")
                    target = bisect.bisect_left(self.bounds, upper)
                    mine[min(target, last)] += value
        self.sum += total


def _exponential_as_explicit(
    scale: int, zero_count: int, zero_threshold: float, positive: tuple[int, list[int]], negative: tuple[int, list[int]]
) -> tuple[tuple[float, ...], list[int]]:
    """An exponential point as (upper bounds, counts + an empty +Inf bucket), for `_Series.add` to fold.

    Bucket index i of scale s covers (2^(i*2^-s), 2^((i+1)*2^-s)] (negatives mirrored).
    """
    width = 2.0**-scale
    pairs: list[tuple[float, int]] = []
    offset, counts = negative
    pairs += [(-(2.0 ** ((offset + k) * width)), count) for k, count in enumerate(counts) if count]
    if zero_count:
        pairs.append((zero_threshold, zero_count))
    offset, counts = positive
    pairs += [(2.0 ** ((offset + k + 1) * width), count) for k, count in enumerate(counts) if count]
    pairs.sort()
    bounds: list[float] = []
    folded: list[int] = []
    for bound, count in pairs:
        if bounds and bound <= bounds[-1]:
            folded[-1] += count
        else:
            bounds.append(bound)
            folded.append(count)
    return tuple(bounds), [*folded, 0]


def _exponential_rows(table: Any) -> list[tuple[tuple[float, ...], list[int]] | None]:
    """Per row: the exponential point as explicit buckets, or None for an explicit-bucket row."""
    if "exp_scale" not in table.column_names:
        return [None] * table.num_rows
    columns = [
        table.column(name).to_pylist()
        for name in (
            "exp_scale",
            "exp_zero_count",
            "exp_zero_threshold_s",
            "exp_positive_offset",
            "exp_positive_counts",
            "exp_negative_offset",
            "exp_negative_counts",
        )
    ]
    result: list[tuple[tuple[float, ...], list[int]] | None] = []
    for scale, zero, threshold, p_offset, p_counts, n_offset, n_counts in zip(*columns, strict=True):
        if scale is None:
            result.append(None)
            continue
        result.append(
            _exponential_as_explicit(
                scale, zero or 0, threshold or 0.0, (p_offset or 0, p_counts or []), (n_offset or 0, n_counts or [])
            )
        )
    return result


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class RedTotals:
    """Cumulative histograms per (family, label set), thread-safe."""

    def __init__(self, max_series: int = MAX_SERIES) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, Labels], _Series] = {}
        self._max_series = max_series
        self.rows_observed = 0
        self.rows_overflowed = 0

    def observe(self, tables: Mapping[str, Any]) -> None:
        """Add the rows of committed RED tables (`{table name: pyarrow.Table}`); other tables are ignored."""
        for name, table in tables.items():
            spec = _BY_TABLE.get(name)
            if spec is None or table.num_rows == 0:
                continue
            self._observe_table(spec, table)

    def _observe_table(self, spec: RedTable, table: Any) -> None:
        sides = table.column("side").to_pylist()
        label_columns = [table.column(column).to_pylist() for _label, column in spec.labels]
        label_names = [label for label, _column in spec.labels]
        bounds_column = table.column("bounds_s").to_pylist()
        counts_column = table.column("bucket_counts").to_pylist()
        sums = table.column("sum_s").to_pylist()
        exponentials = _exponential_rows(table)
        rows = zip(
            sides, bounds_column, counts_column, sums, zip(*label_columns, strict=True), exponentials, strict=True
        )
        with self._lock:
            for side, row_bounds, row_counts, total, values, as_explicit in rows:
                bounds, counts = (row_bounds, row_counts) if as_explicit is None else as_explicit
                family = spec.families.get(side)
                if family is None or len(counts) != len(bounds) + 1:
                    continue
                key = (family, tuple(zip(label_names, map(_text, values), strict=True)))
                series = self._series.get(key)
                if series is None:
                    if len(self._series) >= self._max_series:
                        self.rows_overflowed += 1
                        continue
                    layout = tuple(bounds) if as_explicit is None else EXPONENTIAL_FALLBACK_BOUNDS
                    series = self._series[key] = _Series(layout)
                series.add(tuple(bounds), counts, total or 0.0)
                self.rows_observed += 1

    def families(self) -> list[MetricFamily]:
        """One histogram family per RED metric (empty ones too, so HELP/TYPE are always there)."""
        grouped: dict[str, list[Histogram]] = {name: [] for name in RED_FAMILY_NAMES}
        with self._lock:
            for (family, labels), series in self._series.items():
                grouped[family].append(
                    Histogram(labels, series.bounds, list(itertools.accumulate(series.counts)), series.sum)
                )
            series_count, observed, overflowed = len(self._series), self.rows_observed, self.rows_overflowed
        families = []
        for spec in RED_TABLES:
            for side, name in spec.families.items():
                families.append(
                    MetricFamily(
                        name,
                        spec.help.format(side=side),
                        MetricType.HISTOGRAM,
                        unit="seconds",
                        histograms=grouped[name],
                    )
                )
        families += [
            MetricFamily(
                "coral_ebpf_red_series",
                "RED histogram series held for /metrics.",
                MetricType.GAUGE,
                samples=[Sample((), series_count)],
            ),
            MetricFamily(
                "coral_ebpf_red_rows_observed",
                "Stored RED histogram rows added to the /metrics totals.",
                MetricType.COUNTER,
                samples=[Sample((), observed)],
            ),
            MetricFamily(
                "coral_ebpf_red_series_overflow",
                f"Stored RED rows left out of /metrics because {self._max_series} series were already held.",
                MetricType.COUNTER,
                samples=[Sample((), overflowed)],
            ),
        ]
        return families
