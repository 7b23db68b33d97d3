"""Query kind "services": every service seen in the window, with its server-side RED and who measured it.

A service is listed when it has HTTP or gRPC metric rows in the window, or sent a resource
(any signal) last seen after the window start. Its RED figures are `red_summary`'s row for that
service grouped by service alone (the same numbers as its overall line with --service), per
protocol, server side; the headline figures are those of the protocol
with the most requests. `engine` is the telemetry.sdk.name its resources carry ("beyla" for
Beyla, the built-in BCC engine's own name, or an application SDK's), `instances` the distinct
service.instance.id values (or pids) seen in the window.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import duckdb

from coral_ebpf.query.params import RedParams
from coral_ebpf.query.red import PROTOCOLS, red_summary
from coral_ebpf.storage.retention import utc_naive

SERVICE_PROTOCOLS = ("http", "grpc")
MAX_SERVICES = 500


def list_services(connection: duckdb.DuckDBPyConnection, params: RedParams) -> dict[str, Any]:
    """{"kind": "services", "services": [...], "window"}, busiest first, at most MAX_SERVICES."""
    start, end = params.window()
    window = {"window_start": utc_naive(start), "window_end": utc_naive(end)}
    names: set[str] = set()
    for kind in SERVICE_PROTOCOLS:
        table = PROTOCOLS[kind].table
        rows = connection.execute(
            f"SELECT DISTINCT service_name FROM {table} WHERE timestamp > $window_start AND timestamp <= $window_end",
            window,
        ).fetchall()
        names.update(name for (name,) in rows)
    resources = connection.execute(
        "SELECT service_name, list(DISTINCT telemetry_sdk_name ORDER BY telemetry_sdk_name), "
        "list(DISTINCT coalesce(service_instance_id, process_pid::VARCHAR) ORDER BY 1) "
        "FROM otel_resources WHERE last_seen > $window_start GROUP BY ALL",
        {"window_start": window["window_start"]},
    ).fetchall()
    identity = {name: (sdks, instances) for name, sdks, instances in resources}
    names.update(identity)
    if params.service:
        names = {name for name in names if name == params.service}
    per_service: dict[str, dict[str, dict[str, Any]]] = {}
    for kind in SERVICE_PROTOCOLS:
        summary = red_summary(connection, kind, replace(params, side="server", by=None, group="service"))
        for row in summary["rows"]:
            if row["requests"]:
                per_service.setdefault(row["service"], {})[kind] = {
                    key: value for key, value in row.items() if key not in ("service", "side")
                }
    services = []
    for name in names:
        per_protocol = per_service.get(name, {})
        headline = max(per_protocol.items(), key=lambda item: item[1]["requests"], default=None)
        sdks, instances = identity.get(name, ([], []))
        measures = headline[1] if headline else _no_requests()
        services.append(
            {
                "service": name,
                "protocol": headline[0] if headline else None,
                **measures,
                "protocols": per_protocol,
                "engine": ", ".join(sdk for sdk in sdks if sdk) or None,
                "instances": len(instances),
                "instance_ids": instances[:20],
            }
        )
    services.sort(key=lambda s: (-s["requests"], s["service"]))
    return {
        "kind": "services",
        "services": services[:MAX_SERVICES],
        "truncated": len(services) > MAX_SERVICES,
        "window": {"start": start, "end": end, "seconds": end - start},
    }


def _no_requests() -> dict[str, Any]:
    return {
        "requests": 0,
        "rate_per_s": 0.0,
        "errors": 0,
        "error_rate": 0.0,
        **{f"{q}{suffix}": None for q in ("p50", "p95", "p99") for suffix in ("_ms", "_bound", "_bound_ms")},
    }
