"""ExportMetricsServiceRequest -> Arrow tables for the RED tables and `otel_histograms`.

Routing is by metric name (semconv.DURATION_METRICS, old and new names). A RED metric must be
an explicit-bucket or an exponential histogram; any other type, or a point that fails
validation, is rejected with a reason (OTLP partial success). Exponential points are stored in
the same tables as explicit ones, in the `exp_*` columns (storage/schema.py). Histograms under
other names (body sizes, ...) go to `otel_histograms` in their own unit. Sums, gauges and
summaries are accepted, counted by name, and not stored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, HistogramDataPoint, Metric

from coral_ebpf.storage.schema import OTHER_HISTOGRAMS, TABLES, arrow_array, arrow_schema
from coral_ebpf.storage.series import StoredSeries
from coral_ebpf.transform.anyvalue import attributes_dict, json_or_none
from coral_ebpf.transform.door import DEFAULT_MAX_AHEAD, TimeWindow, float_reason
from coral_ebpf.transform.histograms import (
    DeltaTracker,
    HistogramPoint,
    Staging,
    read_exponential_point,
    read_point,
)
from coral_ebpf.transform.resource import UNKNOWN_SERVICE, ResourceInfo, resource_info
from coral_ebpf.transform.semconv import COLUMN_MAPPERS, DURATION_METRICS, DURATION_UNITS, MetricRoute, as_text
from coral_ebpf.transform.senders import sender_name

_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_NO_RECORDED_VALUE = 1  # DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK


@dataclass
class MetricRows:
    tables: dict[str, pa.Table]
    resources: list[ResourceInfo] = field(default_factory=list)
    points: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)  # "<type> <name>" -> points
    per_sdk: Counter[str] = field(default_factory=Counter)


def _points_in(metric: Metric, kind: str) -> int:
    return len(getattr(metric, kind).data_points) if kind else 0


@dataclass
class _Scope:
    """What every point of one resource/scope shares while it is flattened."""

    result: MetricRows
    rows: dict[str, list[dict[str, Any]]]
    info: ResourceInfo
    resource_key: tuple[bytes, ...]
    scope_name: str
    staging: Staging
    window: TimeWindow


class MetricsFlattener:
    def __init__(self, agent_id: str, deltas: DeltaTracker) -> None:
        self.agent_id = agent_id
        self.deltas = deltas

    def flatten(
        self, request: ExportMetricsServiceRequest, staging: Staging, window: TimeWindow | None = None
    ) -> MetricRows:
        """Rows for `request`; delta state changes go to `staging` (commit them only if stored).

        Points outside `window` (default: up to one day ahead of now) are rejected.
        """
        window = window or TimeWindow.now(DEFAULT_MAX_AHEAD)
        rows: dict[str, list[dict[str, Any]]] = {}
        result = MetricRows(tables={})
        for resource_metrics in request.resource_metrics:
            info = resource_info(resource_metrics.resource)
            resource_key = tuple(sorted(kv.SerializeToString() for kv in resource_metrics.resource.attributes))
            for scope_metrics in resource_metrics.scope_metrics:
                scope = _Scope(result, rows, info, resource_key, scope_metrics.scope.name, staging, window)
                for metric in scope_metrics.metrics:
                    self._metric(scope, metric)
        result.tables = {name: _to_table(name, table_rows) for name, table_rows in rows.items() if table_rows}
        return result

    def _metric(self, scope: _Scope, metric: Metric) -> None:
        result = scope.result
        kind = metric.WhichOneof("data") or ""
        count = _points_in(metric, kind)
        result.points += count
        result.per_sdk[sender_name(scope.info.sdk_name, scope.scope_name)] += count
        route = DURATION_METRICS.get(metric.name)
        if kind in ("histogram", "exponential_histogram"):
            self._histogram(scope, metric, route)
        elif route is not None:
            self._reject_wrong_type(result, metric, kind, count)
        elif count:
            result.ignored[f"{kind or 'empty'} {metric.name}"] += count

    @staticmethod
    def _reject_wrong_type(result: MetricRows, metric: Metric, kind: str, count: int) -> None:
        reason = f"{metric.name} must be a histogram or an exponential histogram, got {kind or 'no data'}"
        result.rejected += count
        result.reasons[reason] += count

    def _histogram(self, scope: _Scope, metric: Metric, route: MetricRoute | None) -> None:
        result = scope.result
        explicit = metric.WhichOneof("data") == "histogram"
        data = metric.histogram if explicit else metric.exponential_histogram
        points = data.data_points
        temporality = data.aggregation_temporality
        if temporality not in (_CUMULATIVE, _DELTA):
            result.rejected += len(points)
            result.reasons[f"{metric.name}: aggregation_temporality is unspecified"] += len(points)
            return
        factor = 1.0
        if route is not None:
            unit_factor = DURATION_UNITS.get(metric.unit)
            if unit_factor is None:
                result.rejected += len(points)
                result.reasons[f"{metric.name}: unit {metric.unit!r} is not a time unit (expected s)"] += len(points)
                return
            factor = unit_factor
        table = route.table if route is not None else OTHER_HISTOGRAMS.name
        series_prefix = (scope.resource_key, scope.scope_name, metric.name, metric.unit)
        for data_point in points:
            if data_point.flags & _NO_RECORDED_VALUE:
                continue
            point = (
                read_point(data_point, scope.window)
                if isinstance(data_point, HistogramDataPoint)
                else read_exponential_point(data_point, scope.window)
            )
            if isinstance(point, str):
                result.rejected += 1
                result.reasons[f"{metric.name}: {point}"] += 1
                continue
            key = (*series_prefix, tuple(sorted(kv.SerializeToString() for kv in data_point.attributes)))
            attributes = attributes_dict(data_point.attributes)
            if temporality == _CUMULATIVE:

                def stored_as(point_attributes: dict[str, Any] = attributes) -> StoredSeries:
                    resource_id = scope.info.resource_id
                    return StoredSeries(resource_id, metric.name, metric.unit, json_or_none(point_attributes))

                stored = self.deltas.cumulative(key, point, scope.staging, stored_as)
            else:
                stored = self.deltas.delta(key, point, scope.staging)
            if stored is None:
                continue
            stored = stored.scaled(factor)
            # A difference of two finite sums, or a sum converted to seconds, can still overflow.
            overflow = float_reason("sum", stored.sum) or float_reason("min", stored.min)
            if overflow or float_reason("max", stored.max):
                result.rejected += 1
                result.reasons[f"{metric.name}: {overflow or 'max is not finite'} after conversion"] += 1
                continue
            row = self._row(scope.info, metric, route, attributes, stored)
            row["source_temporality"] = "cumulative" if temporality == _CUMULATIVE else "delta"
            scope.rows.setdefault(table, []).append(row)
            if not scope.result.resources or scope.result.resources[-1] is not scope.info:
                scope.result.resources.append(scope.info)

    def _row(
        self,
        info: ResourceInfo,
        metric: Metric,
        route: MetricRoute | None,
        attributes: dict[str, Any],
        point: HistogramPoint,
    ) -> dict[str, Any]:
        service = info.service_name
        if service == UNKNOWN_SERVICE:
            service = as_text(attributes.get("service.name")) or service
        row: dict[str, Any] = {
            "timestamp": point.time_ns,
            "start_time": point.start_ns or point.time_ns,
            "agent_id": self.agent_id,
            "resource_id": info.resource_id,
            "service_name": service,
            "service_namespace": info.service_namespace or as_text(attributes.get("service.namespace")),
            "telemetry_sdk_name": info.sdk_name,
            "metric_name": metric.name,
            "side": route.side if route is not None else "",
            "unit": metric.unit,
            "count": point.count,
            "bucket_counts": list(point.counts),
            "attributes": json_or_none(attributes),
        }
        buckets = point.exponential
        if buckets is not None:
            # Everything in the +Inf bucket: readers of only the explicit columns see the right count.
            threshold = "exp_zero_threshold_s" if route is not None else "exp_zero_threshold"
            row.update(
                {threshold: buckets.zero_threshold},
                bucket_counts=[point.count],
                exp_scale=buckets.scale,
                exp_zero_count=buckets.zero_count,
                exp_positive_offset=buckets.positive_offset,
                exp_positive_counts=list(buckets.positive),
                exp_negative_offset=buckets.negative_offset,
                exp_negative_counts=list(buckets.negative),
            )
        if route is None:
            row.update(sum=point.sum, min=point.min, max=point.max, bounds=list(point.bounds))
        else:
            row.update(sum_s=point.sum, min_s=point.min, max_s=point.max, bounds_s=list(point.bounds))
            row.update(COLUMN_MAPPERS[route.table](attributes))
        return row


def _to_table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    schema = arrow_schema(name)
    columns = TABLES[name].column_names
    arrays = [arrow_array([row.get(column) for row in rows], schema.field(column).type) for column in columns]
    return pa.Table.from_arrays(arrays, schema=schema)
