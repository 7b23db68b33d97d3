"""Human output of `coral-ebpf query`: tables, the overall line, trace trees, and empty-result advice."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from coral_ebpf.cli.table import Shrink, number, print_grid, print_tsv, text, wrap_text
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
    keys = ("service", "instance", "route", "method", "operation", "table")
    parts = [f"{key} {params[key]!r}" for key in keys if params.get(key)]
    return f" matching {', '.join(parts)}" if parts else ""


def several_instances(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether some service in `rows` has more than one instance (then the table shows which row is whose)."""
    seen: dict[str, set[Any]] = {}
    for row in rows:
        seen.setdefault(row["service"], set()).add(row.get("instance"))
    return any(len(instances) > 1 for instances in seen.values())


def format_rate(value: float) -> str:
    """Requests per second with as many decimals as the size deserves (3963/s, 12.5/s, 0.17/s)."""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def span_text(seconds: float) -> str:
    """A length of time for people: 45s, 10m 1s, 2h 3m."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    return f"{count} {noun if count == 1 else (plural_noun or noun + 's')}"


_TSV_MEASURES = ("requests", "rate_per_s", "errors", "status_4xx", "error_rate", "p50_ms", "p95_ms", "p99_ms")


def print_red(
    result: Mapping[str, Any],
    params: Mapping[str, Any],
    *,
    width: int | None = None,
    tsv: bool = False,
    advice: Callable[[], Sequence[str]] = lambda: (),
) -> None:
    """The RED table (or TSV of the JSON fields); `width` as table.output_width() gives it.

    `advice` is asked only for an empty result: lines on which engine serves the protocol here.
    """
    kind = result["kind"]
    title = _TITLES[kind]
    side = result.get("side", "all")
    rows = result["rows"]
    group_columns = _GROUP_COLUMNS[kind]
    show_side = side == "all"
    # On a narrow output, one service goes into the title and leaves its column to the routes.
    show_service = width is None or len({row["service"] for row in rows}) > 1
    four_xx = kind == "http"
    if several_instances(rows):
        group_columns = (("Instance", "instance"), *group_columns)
    if tsv:
        keys = ["service", "side", *(key for _, key in group_columns)]
        measures = [m for m in _TSV_MEASURES if four_xx or m != "status_4xx"]
        print_tsv([*keys, *measures], [[row.get(k) for k in (*keys, *measures)] for row in rows])
        return
    if not rows:
        _print_no_red(result, params, title, side, advice=advice(), width=width)
        return
    columns = [
        *([text("Service", shrink=Shrink.MIDDLE, min_width=10)] if show_service else []),
        *([text("Side", shrink=Shrink.NEVER)] if show_side else []),
    ]
    for header, key in group_columns:
        long_values = key in ("route", "table", "destination") or (kind == "grpc" and key == "method")
        columns.append(
            text(header, shrink=Shrink.MIDDLE if long_values else Shrink.END, min_width=20 if long_values else 8)
        )
    columns += [number("Requests"), number("Rate/s"), number("Errors")]
    columns += [number("4xx")] if four_xx else []
    columns += [number("Error %", drop_order=2), number("P50"), number("P95", drop_order=1), number("P99")]
    table_rows = []
    for row in rows:
        cells: list[Any] = [*([row["service"]] if show_service else []), *([row["side"]] if show_side else [])]
        cells += [row.get(key) or "" for _, key in group_columns]
        cells += [row["requests"], format_rate(row["rate_per_s"]), row["errors"]]
        cells += [row.get("status_4xx", 0)] if four_xx else []
        cells += [
            _percent(row["error_rate"]),
            format_quantile(row, "p50_ms"),
            format_quantile(row, "p95_ms"),
            format_quantile(row, "p99_ms"),
        ]
        table_rows.append(cells)
    overall = result["overall"]
    four_xx_text = f", {overall.get('status_4xx', 0)} 4xx" if four_xx else ""
    footer = (
        f"Overall: {plural(overall['requests'], 'request')} ({format_rate(overall['rate_per_s'])}/s), "
        f"{plural(overall['errors'], 'error')} ({_percent(overall['error_rate'])}){four_xx_text}, "
        f"P50={format_quantile(overall, 'p50_ms')} P95={format_quantile(overall, 'p95_ms')} "
        f"P99={format_quantile(overall, 'p99_ms')}"
    )
    covered = result.get("window", {}).get("covered_seconds")
    if covered is not None and covered < result["window"]["seconds"] - 1:
        footer += f"\nRates are over the {span_text(covered)} covered by data (the window's start has none)."
    if four_xx:
        footer += "\nErrors are 5xx (and no response); 4xx answers are counted apart" + (
            "; on the client side they are errors too." if side in ("client", "all") else "."
        )
    if result.get("source") == "spans":
        footer += (
            f"\nSource: stored spans (no {title} metrics in this window; the sender exported only spans, "
            "so these figures are counted from them and the percentiles are exact)"
        )
    side_text = "" if show_side else f", {side} side"
    if not show_service:
        side_text = f", {rows[0]['service']}{side_text}"
    status_text = f", status {params['status']}" if params.get("status") else ""
    print_grid(
        columns,
        table_rows,
        width=width,
        title=f"{title} — {_window_text(params)}{side_text}{status_text}",
        footer=footer,
    )


def _print_wrapped(line: str, width: int | None) -> None:
    print("\n".join(wrap_text(line, width)))


def _print_no_red(
    result: Mapping[str, Any],
    params: Mapping[str, Any],
    title: str,
    side: str,
    *,
    advice: Sequence[str],
    width: int | None,
) -> None:
    side_text = "" if side == "all" else f"{side}-side "
    print(f"No {title} {side_text}requests in {_window_text(params)}{_filters_text(params)}.")
    available = result.get("services_available") or []
    if not available:
        print(f"The database holds no {title} metrics at all.")
        for line in advice:
            _print_wrapped(line, width)
        return
    print(f"Services with {title} metrics (any age still retained):")
    for entry in available:
        print(f"  {entry['service']} ({entry['side']} side, last data {_ago(entry['last_seen'])})")
    print("Try another --service or --side, or a longer --since.")
    for line in advice:
        _print_wrapped(line, width)


def _clock(unix: float | None) -> str:
    """A start time: the time of day for today's, else date and time (local time, as `date` shows)."""
    if unix is None:
        return "?"
    moment = datetime.fromtimestamp(unix)
    return moment.strftime("%H:%M:%S" if moment.date() == datetime.now().date() else "%m-%d %H:%M:%S")


def _trace_status(trace: Mapping[str, Any]) -> str:
    code = trace.get("root_status_code")
    return trace["status"] if code is None else f"{trace['status']} {code}"


_TRACE_TSV = ("trace_id", "start_time", "duration_ms", "span_count", "status", "root_status_code", "root_service")


def print_traces(
    result: Mapping[str, Any],
    params: Mapping[str, Any],
    *,
    tree: bool,
    width: int | None = None,
    tsv: bool = False,
    advice: Callable[[], Sequence[str]] = lambda: (),
) -> None:
    traces = result["traces"]
    if tsv:
        headers = [*_TRACE_TSV, "root_operation"]
        print_tsv(headers, [[trace.get(key) for key in headers] for trace in traces])
        return
    if not traces:
        what = f"trace {params['trace_id']!r}" if params.get("trace_id") else f"traces in {_window_text(params)}"
        print(f"No {what}{_filters_text(params)}.")
        for line in advice():
            _print_wrapped(line, width)
        if not params.get("trace_id"):
            print("Check the service name, or try a longer --since.")
        return
    fleet = bool(result.get("fleet"))
    show_service = width is None or len({trace["root_service"] for trace in traces}) > 1
    if tree:
        for trace in traces:
            _print_tree(trace, fleet)
        return
    rows = [
        [
            _clock(trace["start_time"]),
            trace["trace_id"],
            *([", ".join(trace.get("agents", []))] if fleet else []),
            *([trace["root_service"]] if show_service else []),
            format_ms(trace["duration_ms"]),
            trace["span_count"],
            _trace_status(trace),
            trace["root_operation"],
        ]
        for trace in traces
    ]
    columns = [
        text("Started", shrink=Shrink.NEVER),
        text("Trace ID", min_width=12),
        *([text("Agents", min_width=8)] if fleet else []),
        *([text("Service", shrink=Shrink.MIDDLE, min_width=10)] if show_service else []),
        number("Duration"),
        number("Spans"),
        text("Status", shrink=Shrink.NEVER),
        text("Root Operation", shrink=Shrink.MIDDLE, min_width=16),
    ]
    order = "longest first" if params.get("sort") == "duration" else "newest first"
    print_grid(
        columns,
        rows,
        width=width,
        title=f"Traces — {_window_text(params)}{'' if show_service else ', ' + traces[0]['root_service']} "
        f"({order}, {plural(len(traces), 'trace')})",
        footer=None if width is None else "--trace-id takes a trace ID's first 8 or more hex digits.",
    )


def _print_tree(trace: Mapping[str, Any], fleet: bool = False) -> None:
    spans = trace.get("spans", [])
    print(
        f"Trace {trace['trace_id']}  duration {format_ms(trace['duration_ms'])}  "
        f"{plural(trace['span_count'], 'span')}  {_trace_status(trace)}"
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


def print_agent_breakdown(result: Mapping[str, Any], *, width: int | None = None) -> None:
    """A colony's RED result, one overall line per agent (each from its own merged histogram)."""
    breakdown = result.get("by_agent") or []
    if not breakdown:
        return
    rows = [
        [
            entry["agent"],
            entry["requests"],
            format_rate(entry["rate_per_s"]),
            entry["errors"],
            _percent(entry["error_rate"]),
            format_quantile(entry, "p50_ms"),
            format_quantile(entry, "p95_ms"),
            format_quantile(entry, "p99_ms"),
        ]
        for entry in breakdown
    ]
    print()
    columns = [text("Agent", shrink=Shrink.MIDDLE), number("Requests"), number("Rate/s"), number("Errors")]
    columns += [number("Error %"), number("P50"), number("P95", drop_order=1), number("P99")]
    print_grid(columns, rows, width=width, title="Per agent")
