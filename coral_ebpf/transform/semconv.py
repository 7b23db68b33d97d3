"""Semantic-convention names, old and new, mapped to table columns.

Beyla renamed its metrics and attributes several times (beyla-facts.md §3 "Naming history"):
every name it has used is accepted, the current name first. A column takes the first of its
candidate attributes that is present and not empty.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coral_ebpf.storage.schema import GRPC_METRICS, HTTP_METRICS, MESSAGING_METRICS, SQL_METRICS


@dataclass(frozen=True)
class MetricRoute:
    table: str
    side: str


# Duration histograms -> table and side. Old names stay accepted forever: an old Beyla, or an
# SDK on an older semconv, sends them.
DURATION_METRICS: dict[str, MetricRoute] = {
    "http.server.request.duration": MetricRoute(HTTP_METRICS.name, "server"),
    "http.server.duration": MetricRoute(HTTP_METRICS.name, "server"),  # <= Beyla 1.3
    "http.client.request.duration": MetricRoute(HTTP_METRICS.name, "client"),
    "http.client.duration": MetricRoute(HTTP_METRICS.name, "client"),  # <= Beyla 1.3
    "rpc.server.call.duration": MetricRoute(GRPC_METRICS.name, "server"),
    "rpc.server.duration": MetricRoute(GRPC_METRICS.name, "server"),  # < Beyla 3.23
    "rpc.client.call.duration": MetricRoute(GRPC_METRICS.name, "client"),
    "rpc.client.duration": MetricRoute(GRPC_METRICS.name, "client"),  # < Beyla 3.23
    "db.client.operation.duration": MetricRoute(SQL_METRICS.name, "client"),
    "sql.client.duration": MetricRoute(SQL_METRICS.name, "client"),  # < Beyla 1.7
    "db.server.operation.duration": MetricRoute(SQL_METRICS.name, "server"),
    "messaging.client.operation.duration": MetricRoute(MESSAGING_METRICS.name, "client"),
    "messaging.publish.duration": MetricRoute(MESSAGING_METRICS.name, "producer"),  # < Beyla 3.9
    "messaging.process.duration": MetricRoute(MESSAGING_METRICS.name, "consumer"),
}

# Seconds per unit for duration histograms. An empty unit is taken as seconds, the unit
# semconv prescribes for every name above.
DURATION_UNITS: dict[str, float] = {
    "s": 1.0,
    "": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
    "min": 60.0,
    "h": 3600.0,
}

SPAN_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")

GRPC_STATUS_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
_GRPC_CODES = {name: code for code, name in enumerate(GRPC_STATUS_NAMES)}
_SMALLINT_MAX = 32767

# Candidate attribute names per concept, current name first.
HTTP_METHOD = ("http.request.method", "http.method")
HTTP_STATUS = ("http.response.status_code", "http.status_code")
HTTP_ROUTE = ("http.route",)
URL_PATH = ("url.path", "http.target")
URL_SCHEME = ("url.scheme", "http.scheme")
RPC_SYSTEM = ("rpc.system.name", "rpc.system")
RPC_METHOD = ("rpc.method",)
RPC_SERVICE = ("rpc.service",)
RPC_STATUS = ("rpc.response.status_code", "rpc.grpc.status_code")
DB_SYSTEM = ("db.system.name", "db.system")
DB_OPERATION = ("db.operation.name", "db.operation")
DB_COLLECTION = ("db.collection.name", "db.sql.table")
DB_NAMESPACE = ("db.namespace", "db.name")
MESSAGING_SYSTEM = ("messaging.system",)
MESSAGING_DESTINATION = ("messaging.destination.name", "messaging.destination")
MESSAGING_OPERATION = ("messaging.operation.name", "messaging.operation.type", "messaging.operation")
SERVER_ADDRESS = ("server.address", "net.host.name", "net.peer.name")
SERVER_PORT = ("server.port", "net.host.port", "net.peer.port")
ERROR_TYPE = ("error.type",)


def first(attributes: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = attributes.get(name)
        if value is not None and value != "":
            return value
    return None


def as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def as_smallint(value: Any) -> int | None:
    """An integer status code from an int or a numeric string; None if it is neither or out of range."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("-").isdigit():
            return None
        value = int(text)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and -_SMALLINT_MAX - 1 <= value <= _SMALLINT_MAX:
        return value
    return None


def as_port(value: Any) -> int | None:
    port = value if isinstance(value, int) and not isinstance(value, bool) else as_smallint(value)
    return port if isinstance(port, int) and 0 <= port <= 65535 else None


def grpc_status_code(value: Any) -> int | None:
    """The numeric gRPC status from `rpc.grpc.status_code` (int) or `rpc.response.status_code`.

    Semconv >= 1.40 makes `rpc.response.status_code` a string holding the canonical name
    ("OK", "UNAVAILABLE"); older senders use the number, sometimes as a string.
    """
    number = as_smallint(value)
    if number is not None:
        return number
    if isinstance(value, str):
        name = value.strip().upper().removeprefix("STATUS_CODE_").replace(" ", "_")
        if name == "CANCELED":
            name = "CANCELLED"
        return _GRPC_CODES.get(name)
    return None


def grpc_method(attributes: Mapping[str, Any]) -> str | None:
    """Beyla puts the full path in `rpc.method`; SDKs split it into `rpc.service` + `rpc.method`."""
    method = as_text(first(attributes, RPC_METHOD))
    service = as_text(first(attributes, RPC_SERVICE))
    if service and method and "/" not in method:
        return f"/{service}/{method}"
    return method or (f"/{service}" if service else None)


def _common(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "server_address": as_text(first(attributes, SERVER_ADDRESS)),
        "server_port": as_port(first(attributes, SERVER_PORT)),
        "error_type": as_text(first(attributes, ERROR_TYPE)),
    }


def http_columns(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "http_method": as_text(first(attributes, HTTP_METHOD)),
        # Beyla always sets http.route; other senders may not, and a path beats nothing.
        "http_route": as_text(first(attributes, HTTP_ROUTE) or first(attributes, URL_PATH)),
        "http_status_code": as_smallint(first(attributes, HTTP_STATUS)),
        "url_scheme": as_text(first(attributes, URL_SCHEME)),
        **_common(attributes),
    }


def grpc_columns(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "rpc_system": as_text(first(attributes, RPC_SYSTEM)),
        "grpc_method": grpc_method(attributes),
        "grpc_status_code": grpc_status_code(first(attributes, RPC_STATUS)),
        **_common(attributes),
    }


def sql_columns(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "db_system": as_text(first(attributes, DB_SYSTEM)),
        "sql_operation": as_text(first(attributes, DB_OPERATION)),
        "table_name": as_text(first(attributes, DB_COLLECTION)),
        "db_namespace": as_text(first(attributes, DB_NAMESPACE)),
        **_common(attributes),
    }


def messaging_columns(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "messaging_system": as_text(first(attributes, MESSAGING_SYSTEM)),
        "destination": as_text(first(attributes, MESSAGING_DESTINATION)),
        "operation": as_text(first(attributes, MESSAGING_OPERATION)),
        **_common(attributes),
    }


COLUMN_MAPPERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    HTTP_METRICS.name: http_columns,
    GRPC_METRICS.name: grpc_columns,
    SQL_METRICS.name: sql_columns,
    MESSAGING_METRICS.name: messaging_columns,
}

# Span columns promoted from attributes: column -> (candidate names, normaliser).
SPAN_PROMOTED: dict[str, tuple[tuple[str, ...], Callable[[Any], Any]]] = {
    "http_method": (HTTP_METHOD, as_text),
    "http_route": (HTTP_ROUTE, as_text),
    "http_status_code": (HTTP_STATUS, as_smallint),
    "rpc_method": (RPC_METHOD, as_text),
    "rpc_status_code": (RPC_STATUS, grpc_status_code),
    "db_system": (DB_SYSTEM, as_text),
    "db_operation": (DB_OPERATION, as_text),
}
