"""The questions an assistant (or a page) may ask, as plain functions over a `Backend`.

Every function is read-only, validates its arguments (a bad one raises `QueryError` naming it),
and bounds its answer: lists are cut to `limit` (at most MAX_ITEMS) and say so in "truncated".
The numbers are exactly those of `coral-ebpf query ... --json`, since both run the same query
kinds through the same executor.

Over a colony (`FleetBackend`) the same functions answer for every agent it polls: `agent`
narrows to one agent (glob with *), answers carry the agents they came from (`by_agent`,
`agents`), `agent_status` is the colony's view of its agents and `list_agents` lists them.
"""

from __future__ import annotations

import time
from typing import Any

from coral_ebpf.ask.backend import AgentState, Backend, FleetBackend
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


def scoped(backend: Backend, params: dict[str, Any], agent: str | None) -> dict[str, Any]:
    """`params` narrowed to `agent`, which only a colony knows (an agent answers for itself alone)."""
    if agent:
        if not isinstance(backend, FleetBackend):
            raise QueryError(
                f"agent: {agent!r} selects one agent of a colony; this server answers for one agent "
                "(ask the colony: coral-ebpf mcp --colony)"
            )
        params["agent"] = agent
    return params


def list_services(
    backend: Backend, *, window: str = "1h", limit: int = MAX_ITEMS, agent: str | None = None
) -> dict[str, Any]:
    result = backend.query("services", scoped(backend, {"since": window}, agent))
    return {"window": result["window"], **_bounded(result["services"], _limit(limit))}


def red_summary(
    backend: Backend,
    *,
    service: str | None = None,
    window: str = "15m",
    group_by: str = "route",
    protocol: str = "http",
    limit: int = MAX_ITEMS,
    agent: str | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = scoped(backend, {"since": window}, agent)
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
    if "by_agent" in result:
        answer["by_agent"] = result["by_agent"][:MAX_ITEMS]
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
    agent: str | None = None,
) -> dict[str, Any]:
    """The slowest traces that started in the window, slowest first."""
    params: dict[str, Any] = scoped(backend, {"since": window, "limit": 1000}, agent)
    if service:
        params["service"] = service
    if min_duration:
        params["min_duration"] = min_duration
    traces = sorted(_traces(backend, params), key=lambda t: (-t["duration_ms"], t["trace_id"]))
    return _bounded(traces, _limit(limit))


def failed_traces(
    backend: Backend, *, service: str | None = None, window: str = "15m", limit: int = 10, agent: str | None = None
) -> dict[str, Any]:
    """Traces with at least one ERROR span that started in the window, newest first."""
    params: dict[str, Any] = scoped(backend, {"since": window, "limit": MAX_ITEMS + 1, "errors_only": True}, agent)
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


def list_agents(backend: Backend, *, state: str | None = None, limit: int = MAX_ITEMS) -> dict[str, Any]:
    """A colony's agents: address, state, when last seen, lag; `state` keeps those in one state."""
    if not isinstance(backend, FleetBackend):
        raise QueryError("list_agents: this server answers for one agent; ask the colony (coral-ebpf mcp --colony)")
    states = [s.value for s in AgentState]
    if state is not None and state not in states:
        raise QueryError(f"state: {state!r} is not one of {', '.join(states)}")
    agents = backend.agents()
    counts = {name: sum(1 for a in agents if a.state == name) for name in states}
    chosen = [a.to_dict() for a in agents if state is None or a.state == state]
    return {"states": counts, **_bounded(chosen, _limit(limit))}


def _colony_status(backend: FleetBackend) -> dict[str, Any]:
    document = backend.status()
    colony = document.get("colony", {})
    agents = backend.agents()
    return {
        "colony": {
            "running": bool(document.get("running", True)),
            **{
                key: colony.get(key)
                for key in ("version", "pid", "polling", "started", "poll_interval_s", "agent_file_problems")
            },
        },
        "states": {s.value: sum(1 for a in agents if a.state == s) for s in AgentState},
        "agents": [a.to_dict() for a in agents[:MAX_ITEMS]],
        "truncated": len(agents) > MAX_ITEMS,
        "database": document.get("database", {}),
    }


def agent_status(backend: Backend) -> dict[str, Any]:
    """Whether the agent runs, each part's state, the probe's verdicts and Beyla's state and diagnosis.

    Over a colony: whether the colony runs and polls, and each agent's state, last seen and lag.
    """
    if isinstance(backend, FleetBackend):
        return _colony_status(backend)
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
    agent: str | None = None,
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
    base: dict[str, Any] = scoped(backend, {"since": seconds}, agent)
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
    answer: dict[str, Any] = {
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
    if "by_agent" in current:  # a colony: which agents the figures add up
        answer["now"]["by_agent"] = current["by_agent"][:MAX_ITEMS]
        answer["before"]["by_agent"] = previous["by_agent"][:MAX_ITEMS]
    return answer


_QUANTILES = ("p50", "p95", "p99")
# Every column of a RED row that is a measure, not a group key (each percentile has a bound flag and value).
_MEASURES = frozenset(
    {"requests", "rate_per_s", "errors", "error_rate"}
    | {f"{q}{suffix}" for q in _QUANTILES for suffix in ("_ms", "_bound", "_bound_ms")}
)
