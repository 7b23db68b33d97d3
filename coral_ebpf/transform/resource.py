"""What a row needs from the OTLP resource: who sent it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from coral_ebpf.transform.anyvalue import attributes_dict, json_or_none
from coral_ebpf.transform.semconv import as_text

# OTel's default when a process sets no service name.
UNKNOWN_SERVICE = "unknown_service"


@dataclass(frozen=True)
class ResourceInfo:
    service_name: str
    service_namespace: str | None
    service_instance_id: str | None
    process_pid: int
    sdk_name: str | None
    attributes: dict[str, Any]
    attributes_json: str | None


def _pid(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**31 - 1:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) <= 2**31 - 1:
        return int(value)
    return 0


def resource_info(resource: Resource) -> ResourceInfo:
    attributes = attributes_dict(resource.attributes)
    return ResourceInfo(
        service_name=as_text(attributes.get("service.name")) or UNKNOWN_SERVICE,
        service_namespace=as_text(attributes.get("service.namespace")),
        service_instance_id=as_text(attributes.get("service.instance.id")),
        process_pid=_pid(attributes.get("process.pid")),
        sdk_name=as_text(attributes.get("telemetry.sdk.name")),
        attributes=attributes,
        attributes_json=json_or_none(attributes),
    )
