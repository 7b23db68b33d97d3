"""Per-request caps on resources, scopes and items, so that one request cannot take seconds of CPU.

Flattening costs Python time per resource and scope even when they are empty: 8 MB of empty
ResourceMetrics are millions of resources. A request over a cap is refused whole before the
consumer sees it (413 / RESOURCE_EXHAUSTED without RetryInfo: the sender must split it, a retry
of the same request would fail the same way).
"""

from __future__ import annotations

from typing import Any

from coral_ebpf.otlp.errors import BodyTooLargeError
from coral_ebpf.otlp.settings import RequestCaps

# The repeated fields of each signal's request: (resources, scopes in a resource).
_LEVELS = {
    "traces": ("resource_spans", "scope_spans"),
    "metrics": ("resource_metrics", "scope_metrics"),
    "logs": ("resource_logs", "scope_logs"),
}


def check_request(signal: str, request: Any, items: int, caps: RequestCaps) -> None:
    """Raise BodyTooLargeError naming the cap when `request` (decoded, or a skeleton) exceeds one."""
    resources_field, scopes_field = _LEVELS[signal]
    resources = getattr(request, resources_field)
    _check("resources", len(resources), caps.max_resources, "otlp.max_resources_per_request")
    scopes = sum(len(getattr(resource, scopes_field)) for resource in resources)
    _check("scopes", scopes, caps.max_scopes, "otlp.max_scopes_per_request")
    _check("items", items, caps.max_items, "otlp.max_items_per_request")


def _check(what: str, count: int, limit: int, key: str) -> None:
    if count > limit:
        raise BodyTooLargeError(
            f"request holds {count} {what}, over the limit of {limit} ({key}); send smaller batches"
        )
