"""`beyla.attributes` are added to Beyla's resources on receipt, never to other senders', never over Beyla's."""

from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from coral_ebpf.beyla.attributes import add_static_attributes


def resource(sdk: str, **extra: str) -> list[KeyValue]:
    values = {"telemetry.sdk.name": sdk, "service.name": "svc", **extra}
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in values.items()]


def as_dict(attributes: list[KeyValue]) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in attributes}


def test_only_beyla_resources_are_tagged_and_beylas_own_values_win() -> None:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().resource.attributes.extend(resource("beyla", **{"deployment.environment": "beyla"}))
    request.resource_spans.add().resource.attributes.extend(resource("opentelemetry"))
    tagged = add_static_attributes(request, {"deployment.environment": "prod", "team": "payments"})
    assert tagged == 1
    first, second = (as_dict(list(rs.resource.attributes)) for rs in request.resource_spans)
    assert first["deployment.environment"] == "beyla" and first["team"] == "payments"
    assert "team" not in second


def test_metrics_requests_too_and_nothing_to_add() -> None:
    request = ExportMetricsServiceRequest()
    request.resource_metrics.add().resource.attributes.extend(resource("beyla"))
    assert add_static_attributes(request, {}) == 0
    assert add_static_attributes(request, {"team": "payments"}) == 1
    assert as_dict(list(request.resource_metrics[0].resource.attributes))["team"] == "payments"
