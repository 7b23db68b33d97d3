"""Human output of `coral-ebpf query`: tables, the overall line, trace trees, and empty-result advice."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from coral_ebpf.cli._common import print_table
from coral_ebpf.units import format_duration

_TITLES = {"http": "HTTP", "grpc": "gRPC", "sql": "SQL", "messaging": "Messaging"}
_GROUP_COLUMNS = {
    "http": (("Method", "method"), ("Route", "route")),
    "grpc": (("Method", "method"),),
    "sql": (("System", "db_system"), ("Operation", "operation"), ("Table", "table")),
    "messaging": (("System", "system"), ("Operation", "operation"), ("Destination", "destination")),
}


def format_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f}s"
    if value >= 100:
        return f"{value:.0f}ms"
    return f"{value:.1f}ms" if value >= 1 else f"{value:.2f}ms"


def format_quantile(row: Mapping[str, Any], key: str) -> str:
    """A percentile cell: `row[key]` (e.g. "p99_ms"), or its bound when the buckets give no more.

    An explicit-bucket percentile in the lowest bucket prints as `≤5ms` (at most that bucket's
    upper bound), one in the +Inf bucket as `>10s`; JSON keeps the number and the flag
    (`p99_bound`, `p99_bound_ms`, see query/red.py).
    """
    stem = key.removesuffix("_ms")
    bound, bound_ms = row.get(f"{stem}_bound"), row.get(f"{stem}_bound_ms")
    if bound == "upper" and bound_ms is not None:
        return "≤" + format_ms(bound_ms)
    if bound == "lower" and bound_ms is not None:
        return ">" + format_ms(bound_ms)
    return format_ms(row.get(key))


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.2f}%"


def _window_text(params: Mapping[str, Any]) -> str:
    return f"the last {params.get('since', '15m')}"


def _start_order(span: Mapping[str, Any]) -> tuple[bool, float]:
    """Spans by start time; one without a time (stored as infinity by an older version) last."""
    return span["start_time"] is None, span["start_time"] or 0.0


def _ago(unix: float | None) -> str:
    if unix is None:
        return "at an unknown time"
    seconds = max(time.time() - unix, 0.0)
    return f"{format_duration(round(seconds))} ago" if seconds >= 1 else "just now"


def _filters_text(params: Mapping[str, Any]) -> str:
    keys = ("service", "route", "method", "operation", "table")
    parts = [f"{key} {params[key]!r}" for key in keys if params.get(key)]
    return f" matching {', '.join(parts)}" if parts else ""


def print_red(result: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    kind = result["kind"]
    title = _TITLES[kind]
    side = result.get("side", "all")
    rows = result["rows"]
    if not rows:
        _print_no_red(result, params, title, side)
        return
    group_columns = _GROUP_COLUMNS[kind]
    show_side = side == "all"
    headers = ["Service", *(["Side"] if show_side else []), *(h for h, _ in group_columns)]
    headers += ["Requests", "Rate/s", "Errors", "Error %", "P50", "P95", "P99"]
    table_rows = []
    for row in rows:
        cells: list[Any] = [row["service"], *([row["side"]] if show_side else [])]
        cells += [row.get(key) or "" for _, key in group_columns]
        cells += [
            row["requests"],
            f"{row['rate_per_s']:.2f}",
            row["errors"],
            _percent(row["error_rate"]),
            format_quantile(row, "p50_ms"),
            format_quantile(row, "p95_ms"),
            format_quantile(row, "p99_ms"),
        ]
        table_rows.append(cells)
    overall = result["overall"]
    footer = (
        f"Overall: {overall['requests']} requests ({overall['rate_per_s']:.2f}/s), "
        f"{overall['errors']} errors ({_percent(overall['error_rate'])}), "
        f"P50={format_quantile(overall, 'p50_ms')} P95={format_quantile(overall, 'p95_ms')} "
        f"P99={format_quantile(overall, 'p99_ms')}"
    )
    if result.get("source") == "spans":
        footer += (
            f"\nSource: stored spans (no {title} metrics in this window; the sender exported only spans, "
            "so these figures are counted from them and the percentiles are exact)"
        )
    side_text = "" if show_side else f", {side} side"
    print_table(headers, table_rows, title=f"{title} — {_window_text(params)}{side_text}", footer=footer)


def _print_no_red(result: Mapping[str, Any], params: Mapping[str, Any], title: str, side: str) -> None:
    side_text = "" if side == "all" else f"{side}-side "
    print(f"No {title} {side_text}requests in {_window_text(params)}{_filters_text(params)}.")
    available = result.get("services_available") or []
    if not available:
        print(
            f"The database holds no {title} metrics at all. Is the agent running and receiving OTLP data "
            "(check 'coral-ebpf status')? Beyla exports metrics every interval (60s unless configured shorter)."
        )
        return
    print(f"Services with {title} metrics (any age still retained):")
    for entry in available:
        print(f"  {entry['service']} ({entry['side']} side, last data {_ago(entry['last_seen'])})")
    print("Try another --service or --side, or a longer --since.")


def print_traces(result: Mapping[str, Any], params: Mapping[str, Any], *, tree: bool) -> None:
    traces = result["traces"]
    if not traces:
        what = f"trace {params['trace_id']!r}" if params.get("trace_id") else f"traces in {_window_text(params)}"
        print(f"No {what}{_filters_text(params)}.")
        print(
            "Spans arrive in batches (Beyla flushes traces every 15s unless configured shorter). Check that the "
            "agent is running ('coral-ebpf status'), the service name, and try a longer --since."
        )
        return
    fleet = bool(result.get("fleet"))
    if tree:
        for trace in traces:
            _print_tree(trace, fleet)
        return
    rows = [
        [
            trace["trace_id"],
            *([", ".join(trace.get("agents", []))] if fleet else []),
            trace["root_service"],
            format_ms(trace["duration_ms"]),
            trace["span_count"],
            trace["status"],
            trace["root_operation"],
        ]
        for trace in traces
    ]
    print_table(
        ["Trace ID", *(["Agents"] if fleet else []), "Service", "Duration", "Spans", "Status", "Root Operation"],
        rows,
        title=f"Traces — {_window_text(params)} (newest first)",
    )


def _print_tree(trace: Mapping[str, Any], fleet: bool = False) -> None:
    spans = trace.get("spans", [])
    print(
        f"Trace {trace['trace_id']}  duration {format_ms(trace['duration_ms'])}  "
        f"{trace['span_count']} spans  {trace['status']}"
    )
    ids = {span["span_id"] for span in spans}
    children: dict[str, list[Mapping[str, Any]]] = {}
    roots = []
    for span in spans:
        parent = span["parent_span_id"]
        if parent and parent in ids:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)

    def walk(span: Mapping[str, Any], prefix: str, last: bool) -> None:
        marker = "└─ " if last else "├─ "
        status = "" if span["status"] != "ERROR" else "  ERROR"
        code = span.get("http_status_code") or span.get("rpc_status_code")
        code_text = f" [{code}]" if code is not None else ""
        where = f"@{span.get('agent')}" if fleet else ""
        print(
            f"{prefix}{marker}{span['service']}{where} ({format_ms(span['duration_ms'])}, {span['name']}){code_text}"
            f" {span['kind'].lower()}{status}"
        )
        kids = sorted(children.get(span["span_id"], []), key=_start_order)
        for index, child in enumerate(kids):
            walk(child, prefix + ("   " if last else "│  "), index == len(kids) - 1)

    roots.sort(key=_start_order)
    for index, root in enumerate(roots):
        walk(root, "", index == len(roots) - 1)
    print()


def print_agent_breakdown(result: Mapping[str, Any]) -> None:
    """A colony's RED result, one overall line per agent (each from its own merged histogram)."""
    breakdown = result.get("by_agent") or []
    if not breakdown:
        return
    rows = [
        [
            entry["agent"],
            entry["requests"],
            f"{entry['rate_per_s']:.2f}",
            entry["errors"],
            _percent(entry["error_rate"]),
            format_quantile(entry, "p50_ms"),
            format_quantile(entry, "p95_ms"),
            format_quantile(entry, "p99_ms"),
        ]
        for entry in breakdown
    ]
    print()
    print_table(["Agent", "Requests", "Rate/s", "Errors", "Error %", "P50", "P95", "P99"], rows, title="Per agent")
