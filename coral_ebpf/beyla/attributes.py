"""`beyla.attributes`: static resource attributes, added by the agent to Beyla's data on receipt.

Beyla has no setting that adds a fixed attribute to everything it exports (it reads
OTEL_RESOURCE_ATTRIBUTES from each *instrumented* process, not from its own environment), so the
agent adds them itself, to every resource whose `telemetry.sdk.name` is `beyla`. An attribute
Beyla already set on a resource is left as Beyla set it. The receiver (or transform) calls
`add_static_attributes` on each decoded export request before it is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

BEYLA_SDK_NAME = "beyla"


def _resources(request: Any) -> Iterable[Any]:
    for field in ("resource_spans", "resource_metrics", "resource_logs"):
        if hasattr(request, field):
            yield from getattr(request, field)


def is_beyla(attributes: Iterable[KeyValue]) -> bool:
    return any(kv.key == "telemetry.sdk.name" and kv.value.string_value == BEYLA_SDK_NAME for kv in attributes)


def add_static_attributes(request: Any, attributes: Mapping[str, str]) -> int:
    """Tag every Beyla resource of an OTLP Export*ServiceRequest; return how many resources were tagged."""
    if not attributes:
        return 0
    tagged = 0
    for resource_data in _resources(request):
        resource_attributes = resource_data.resource.attributes
        if not is_beyla(resource_attributes):
            continue
        present = {kv.key for kv in resource_attributes}
        for key, value in attributes.items():
            if key not in present:
                resource_attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
        tagged += 1
    return tagged
