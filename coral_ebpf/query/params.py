"""Typed query parameters, built from the JSON-like dicts the CLI and the control socket send.

Durations may be numbers of seconds or text such as "15m" or "500ms". Unknown keys and bad
values raise `QueryError` naming the key, so a typo never silently widens a query.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from coral_ebpf.errors import CoralError
from coral_ebpf.units import parse_duration

DEFAULT_SINCE = 900.0
DEFAULT_TRACE_LIMIT = 20
MAX_TRACE_LIMIT = 10_000
MAX_BUCKETS = 1_440  # a day by the minute
GROUPS = ("route", "method", "status", "service", "agent")
TRACE_SORTS = ("start", "duration")
SIDES = ("server", "client", "producer", "consumer", "all")
_HEX = re.compile(r"^[0-9a-f]+$")
_STATUS = re.compile(r"^[1-5](xx|[0-9][0-9])$")


class QueryError(CoralError):
    """A query's parameters are wrong (bad value, unknown key or kind)."""


def _duration(key: str, value: Any) -> float:
    try:
        return parse_duration(value)
    except (TypeError, ValueError) as exc:
        raise QueryError(f"{key}: {exc}") from None


def _text(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise QueryError(f"{key}: expected text, got {value!r}")
    return value or None


def _unix_time(key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueryError(f"{key}: expected unix seconds, got {value!r}")
    return float(value)


def _check_keys(cls: type[Any], data: Mapping[str, Any]) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise QueryError(f"unknown query parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


@dataclass(frozen=True)
class RedParams:
    """RED query over one protocol table: window, filters, and which side (server/client)."""

    since: float = DEFAULT_SINCE
    until: float | None = None  # unix seconds; None = now
    service: str | None = None
    route: str | None = None  # HTTP route; gRPC method; a '*' makes it a glob
    method: str | None = None  # HTTP method; gRPC method
    operation: str | None = None  # SQL operation; messaging operation
    table: str | None = None  # SQL table; messaging destination
    side: str | None = None  # None = the protocol's default (see red.py)
    by: float | None = None  # seconds per time bucket; None = one summary over the window
    group: str | None = None  # None = the protocol's keys; "route", "method", "status", "service" or "agent" (red.py)
    agent: str | None = None  # only rows stored by this agent_id (a colony holds many; glob with *)
    status: str | None = None  # HTTP status class "2xx".."5xx" or one code such as "404"
    instance: str | None = None  # only this service.instance.id (`<host>:<pid>`; glob with *)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RedParams:
        _check_keys(cls, data)
        side = _text("side", data.get("side"))
        if side is not None and side not in SIDES:
            raise QueryError(f"side: {side!r} is not one of {', '.join(SIDES)}")
        since = _duration("since", data.get("since", DEFAULT_SINCE))
        if since <= 0:
            raise QueryError("since: must be greater than 0 (e.g. 15m)")
        by = None if data.get("by") is None else _duration("by", data["by"])
        if by is not None and (by <= 0 or since / by > MAX_BUCKETS):
            raise QueryError(f"by: must be greater than 0 and give at most {MAX_BUCKETS} buckets over since")
        group = _text("group", data.get("group"))
        if group is not None and group not in GROUPS:
            raise QueryError(f"group: {group!r} is not one of {', '.join(GROUPS)}")
        return cls(
            since=since,
            by=by,
            group=group,
            until=_unix_time("until", data.get("until")),
            service=_text("service", data.get("service")),
            route=_text("route", data.get("route")),
            method=_text("method", data.get("method")),
            operation=_text("operation", data.get("operation")),
            table=_text("table", data.get("table")),
            side=side,
            agent=_text("agent", data.get("agent")),
            status=_status(data.get("status")),
            instance=_text("instance", data.get("instance")),
        )

    def window(self) -> tuple[float, float]:
        until = time.time() if self.until is None else self.until
        return until - self.since, until


def _status(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    status = _text("status", value)
    if status is not None:
        status = status.lower()
        if not _STATUS.match(status):
            raise QueryError(f"status: {value!r} is not a status class (2xx, 4xx, 5xx, …) or a code such as 404")
    return status


@dataclass(frozen=True)
class TraceParams:
    since: float = DEFAULT_SINCE
    until: float | None = None
    service: str | None = None
    trace_id: str | None = None  # full id, or a prefix of at least 8 hex digits
    min_duration: float | None = None  # seconds
    limit: int = DEFAULT_TRACE_LIMIT
    with_spans: bool = False
    errors_only: bool = False  # only traces with at least one ERROR span
    agent: str | None = None  # only spans stored by this agent_id (glob with *)
    sort: str = "start"  # "start": newest first; "duration": longest first
    instance: str | None = None  # only traces through this service.instance.id (glob with *)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TraceParams:
        _check_keys(cls, data)
        trace_id = _text("trace_id", data.get("trace_id"))
        if trace_id is not None:
            trace_id = trace_id.strip().lower()
            if not _HEX.match(trace_id) or not 8 <= len(trace_id) <= 32:
                raise QueryError(f"trace_id: {trace_id!r} is not a trace id (32 hex digits, or a prefix of at least 8)")
        limit = data.get("limit", DEFAULT_TRACE_LIMIT)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_TRACE_LIMIT:
            raise QueryError(f"limit: expected a whole number from 1 to {MAX_TRACE_LIMIT}, got {limit!r}")
        with_spans = data.get("with_spans", False)
        if not isinstance(with_spans, bool):
            raise QueryError(f"with_spans: expected true or false, got {with_spans!r}")
        errors_only = data.get("errors_only", False)
        if not isinstance(errors_only, bool):
            raise QueryError(f"errors_only: expected true or false, got {errors_only!r}")
        min_duration = data.get("min_duration")
        sort = data.get("sort", "start")
        if sort not in TRACE_SORTS:
            raise QueryError(f"sort: {sort!r} is not one of {', '.join(TRACE_SORTS)}")
        since = _duration("since", data.get("since", DEFAULT_SINCE))
        if since <= 0:
            raise QueryError("since: must be greater than 0 (e.g. 15m)")
        return cls(
            since=since,
            until=_unix_time("until", data.get("until")),
            service=_text("service", data.get("service")),
            trace_id=trace_id,
            min_duration=None if min_duration is None else _duration("min_duration", min_duration),
            limit=limit,
            with_spans=with_spans,
            errors_only=errors_only,
            agent=_text("agent", data.get("agent")),
            sort=sort,
            instance=_text("instance", data.get("instance")),
        )

    def window(self) -> tuple[float, float]:
        until = time.time() if self.until is None else self.until
        return until - self.since, until
