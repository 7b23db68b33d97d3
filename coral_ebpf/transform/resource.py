"""What a row needs from the OTLP resource (who sent it), and the `otel_resources` rows."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from coral_ebpf.storage.schema import RESOURCES, arrow_array, arrow_schema
from coral_ebpf.transform.anyvalue import attributes_dict, json_or_none
from coral_ebpf.transform.semconv import as_text

# OTel's default when a process sets no service name.
UNKNOWN_SERVICE = "unknown_service"
_SCHEMA = arrow_schema(RESOURCES.name)


@dataclass(frozen=True)
class ResourceInfo:
    resource_id: int
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


def pid_from_instance_id(value: Any) -> int:
    """The pid in Beyla's `service.instance.id`, `<host>:<pid>` (its resource has no `process.pid`); else 0."""
    if not isinstance(value, str):
        return 0
    host, separator, pid = value.rpartition(":")
    return _pid(pid) if separator and host else 0


def resource_id(serialized: bytes) -> int:
    """A stable 64-bit id for a resource, from its serialized protobuf."""
    return int.from_bytes(hashlib.blake2b(serialized, digest_size=8).digest(), "big")


def resource_info(resource: Resource, serialized: bytes | None = None) -> ResourceInfo:
    attributes = attributes_dict(resource.attributes)
    return ResourceInfo(
        resource_id=resource_id(resource.SerializeToString() if serialized is None else serialized),
        service_name=as_text(attributes.get("service.name")) or UNKNOWN_SERVICE,
        service_namespace=as_text(attributes.get("service.namespace")),
        service_instance_id=as_text(attributes.get("service.instance.id")),
        process_pid=_pid(attributes.get("process.pid")) or pid_from_instance_id(attributes.get("service.instance.id")),
        sdk_name=as_text(attributes.get("telemetry.sdk.name")),
        attributes=attributes,
        attributes_json=json_or_none(attributes),
    )


def resource_table(infos: Iterable[ResourceInfo], seen_ns: int | None = None) -> pa.Table:
    """`otel_resources` rows for the resources a batch refers to, seen now."""
    now = time.time_ns() if seen_ns is None else seen_ns
    unique = {info.resource_id: info for info in infos}
    values: dict[str, list[Any]] = {
        "resource_id": [i.resource_id for i in unique.values()],
        "service_name": [i.service_name for i in unique.values()],
        "service_namespace": [i.service_namespace for i in unique.values()],
        "service_instance_id": [i.service_instance_id for i in unique.values()],
        "process_pid": [i.process_pid for i in unique.values()],
        "telemetry_sdk_name": [i.sdk_name for i in unique.values()],
        "attributes": [i.attributes_json for i in unique.values()],
        "first_seen": [now] * len(unique),
        "last_seen": [now] * len(unique),
    }
    arrays = [arrow_array(values[f.name], f.type) for f in _SCHEMA]
    return pa.Table.from_arrays(arrays, schema=_SCHEMA)
