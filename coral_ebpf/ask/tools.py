"""The questions an assistant (or a page) may ask, as plain functions over a `Backend`.

Every function is read-only, validates its arguments (a bad one raises `QueryError` naming it),
and bounds its answer: lists are cut to `limit` (at most MAX_ITEMS) and say so in "truncated".
The numbers are exactly those of `coral-ebpf query ... --json`, since both run the same query
kinds through the same executor.
"""

from __future__ import annotations

import time
from typing import Any

from coral_ebpf.ask.backend import Backend
from coral_ebpf.query.params import QueryError

MAX_ITEMS = 50
RED_PROTOCOLS = ("http", "grpc", "sql", "messaging")
# compare_windows: what counts as "slower" and "more error-prone".
SLOWER_RATIO = 1.2  # p99 at least 20% higher
SLOWER_MIN_MS = 1.0  # and at least 1 ms higher
ERROR_RATE_STEP = 0.01  # error rate at least 1 percentage point higher


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_ITEMS:
        raise QueryError(f"limit: expected a whole number from 1 to {MAX_ITEMS}, got {limit!r}")
    return limit


def _protocol(protocol: str) -> str:
    if protocol not in RED_PROTOCOLS:
        raise QueryError(f"protocol: {protocol!r} is not one of {', '.join(RED_PROTOCOLS)}")
    return protocol


def _bounded(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    return {"items": items[:limit], "total": len(items), "truncated": len(items) > limit}


def list_services(backend: Backend, *, window: str = "1h", limit: int = MAX_ITEMS) -> dict[str, Any]:
    result = backend.query("services", {"since": window})
    return {"window": result["window"], **_bounded(result["services"], _limit(limit))}


def red_summary(
    backend: Backend,
    *,
    service: str | None = None,
    window: str = "15m",
    group_by: str = "route",
    protocol: str = "http",
    limit: int = MAX_ITEMS,
) -> dict[str, Any]:
    params: dict[str, Any] = {"since": window}
    if service:
        params["service"] = service
    if protocol in ("http", "grpc"):
        params["group"] = group_by
    elif group_by != "route":
        raise QueryError(f"group_by: {protocol} rows are grouped by their own keys; use group_by 'route'")
    result = backend.query(_protocol(protocol), params)
    answer = {"protocol": protocol, "window": result["window"], "side": result["side"], "overall": result["overall"]}
    answer.update(_bounded(result["rows"], _limit(limit)))
    if "services_available" in result:
        answer["services_available"] = result["services_available"][:MAX_ITEMS]
    return answer


def _traces(backend: Backend, params: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = backend.query("traces", params)["traces"]
    return found


def slow_traces(
    backend: Backend,
    *,
    service: str | None = None,
    window: str = "15m",
    min_duration: str | None = None,
    limit: int = 10,
) -> dict[str, Any]:
    """The slowest traces that started in the window, slowest first."""
    params: dict[str, Any] = {"since": window, "limit": 1000}
    if service:
        params["service"] = service
    if min_duration:
        params["min_duration"] = min_duration
    traces = sorted(_traces(backend, params), key=lambda t: (-t["duration_ms"], t["trace_id"]))
    return _bounded(traces, _limit(limit))


def failed_traces(
    backend: Backend, *, service: str | None = None, window: str = "15m", limit: int = 10
) -> dict[str, Any]:
    """Traces with at least one ERROR span that started in the window, newest first."""
    params: dict[str, Any] = {"since": window, "limit": MAX_ITEMS + 1, "errors_only": True}
    if service:
        params["service"] = service
    return _bounded(_traces(backend, params), _limit(limit))


def get_trace(backend: Backend, trace_id: str, *, max_spans: int = 200) -> dict[str, Any]:
    """One trace as a waterfall (spans in tree order with depth, offset, duration, key attributes)."""
    if isinstance(max_spans, bool) or not isinstance(max_spans, int) or not 1 <= max_spans <= 1000:
        raise QueryError(f"max_spans: expected a whole number from 1 to 1000, got {max_spans!r}")
    trace: dict[str, Any] = backend.query("waterfall", {"trace_id": trace_id})["trace"]
    spans = trace["spans"]
    trace["spans"] = spans[:max_spans]
    trace["truncated"] = len(spans) > max_spans
    return trace


def agent_status(backend: Backend) -> dict[str, Any]:
    """Whether the agent runs, each part's state, the probe's verdicts and Beyla's state and diagnosis."""
    document = backend.status()
    parts = {
        name: {"state": body.get("state"), "reason": body.get("reason")}
        for name, body in document.items()
        if isinstance(body, dict) and "state" in body
    }
    probe = document.get("probe", {})
    beyla = document.get("beyla", {})
    return {
        "agent": document.get("agent", {}),
        "parts": parts,
        "probe": {"kernel": probe.get("kernel"), "verdicts": probe.get("summary", {})},
        "beyla": {
            key: beyla.get(key)
            for key in ("state", "reason", "pid", "version", "restarts", "last_exit_code", "diagnosis")
        },
        "red_engine": document.get("red", {}).get("engine"),
    }


def _got_slower(now: float | None, before: float | None) -> bool:
    if now is None or before is None:
        return False
    return now >= before * SLOWER_RATIO and now - before >= SLOWER_MIN_MS


def _key(row: dict[str, Any], keys: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(row.get(key) for key in keys)


def compare_windows(
    backend: Backend,
    *,
    service: str | None = None,
    window: str = "1h",
    protocol: str = "http",
    limit: int = 10,
) -> dict[str, Any]:
    """This window against the one before it: which groups got slower (p99) or more error-prone."""
    from coral_ebpf.units import parse_duration

    try:
        seconds = parse_duration(window)
    except ValueError as exc:
        raise QueryError(f"window: {exc}") from None
    if seconds <= 0:
        raise QueryError("window: must be greater than 0 (e.g. 1h)")
    now = time.time()
    base: dict[str, Any] = {"since": seconds}
    if service:
        base["service"] = service
    kind = _protocol(protocol)
    current = backend.query(kind, {**base, "until": now})
    previous = backend.query(kind, {**base, "until": now - seconds})
    keys = tuple(k for k in current["rows"][0] if k not in _MEASURES) if current["rows"] else ()
    before = {_key(row, keys): row for row in previous["rows"]}
    slower, more_errors, new = [], [], []
    for row in current["rows"]:
        old = before.get(_key(row, keys))
        group = {key: row[key] for key in keys}
        if old is None:
            new.append({**group, "requests": row["requests"]})
            continue
        change = {
            **group,
            "requests": {"now": row["requests"], "before": old["requests"]},
            "p99_ms": {"now": row["p99_ms"], "before": old["p99_ms"]},
            "error_rate": {"now": row["error_rate"], "before": old["error_rate"]},
        }
        if _got_slower(row["p99_ms"], old["p99_ms"]):
            slower.append(change)
        if row["error_rate"] - old["error_rate"] >= ERROR_RATE_STEP:
            more_errors.append(change)
    limit = _limit(limit)
    slower.sort(key=lambda c: -(c["p99_ms"]["now"] / max(c["p99_ms"]["before"], 1e-9)))
    more_errors.sort(key=lambda c: -(c["error_rate"]["now"] - c["error_rate"]["before"]))
    return {
        "protocol": kind,
        "window_seconds": seconds,
        "now": {"window": current["window"], "overall": current["overall"]},
        "before": {"window": previous["window"], "overall": previous["overall"]},
        "slower": _bounded(slower, limit),
        "more_error_prone": _bounded(more_errors, limit),
        "new": _bounded(new, limit),
        "rules": {
            "slower": f"p99 at least {SLOWER_RATIO}x and {SLOWER_MIN_MS} ms higher than before",
            "more_error_prone": f"error rate at least {ERROR_RATE_STEP * 100:.0f} percentage point(s) higher",
        },
    }


_QUANTILES = ("p50", "p95", "p99")
# Every column of a RED row that is a measure, not a group key (each percentile has a bound flag and value).
_MEASURES = frozenset(
    {"requests", "rate_per_s", "errors", "error_rate"}
    | {f"{q}{suffix}" for q in _QUANTILES for suffix in ("_ms", "_bound", "_bound_ms")}
)
