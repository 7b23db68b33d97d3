"""An OpenTelemetry SDK meter set up the way Beyla exports: the real OTLP client for metric tests."""

from __future__ import annotations

from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from tests.helpers.beyla_otlp import BEYLA_DURATION_BUCKETS


def beyla_meter_provider(exporter: MetricExporter, resource: Resource) -> MeterProvider:
    """Cumulative histograms with Beyla's duration buckets, exported only on `force_flush` (never by timer)."""
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    buckets = View(instrument_type=Histogram, aggregation=ExplicitBucketHistogramAggregation(BEYLA_DURATION_BUCKETS))
    return MeterProvider(resource=resource, metric_readers=[reader], views=[buckets])
