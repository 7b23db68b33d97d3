"""Pictures in the terminal for `coral-ebpf query`: the trace waterfall and RED-over-time sparklines.

Both render the JSON the query layer returns (`query.waterfall`, `query.timeline`), so what the
terminal shows is what `--json` prints, only drawn.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from coral_ebpf.cli.query_output import format_ms, format_rate, plural
from coral_ebpf.cli.table import Shrink, number, print_grid, text
from coral_ebpf.query.waterfall import bar_fraction

BAR_WIDTH = 20
SPARK_WIDTH = 24
_SPARKS = "▁▂▃▄▅▆▇█"
_EIGHTHS = " ▏▎▍▌▋▊▉"


def _terminal_width() -> int:
    return max(shutil.get_terminal_size((80, 24)).columns, 60)


def time_bar(start: float, end: float, width: int = BAR_WIDTH) -> str:
    """A bar from fraction `start` to `end` of `width` cells; never invisible, even for a 0 ms span."""
    left = min(int(start * width), width - 1)
    cells_long = max((end - start) * width, 0.0)
    full = int(cells_long)
    partial = _EIGHTHS[int((cells_long - full) * 8)] if full < width - left else ""
    bar = "█" * min(full, width - left) + partial.strip()
    if not bar:
        bar = "▏"
    return (" " * left + bar).ljust(width)[:width]


def _attributes_text(attributes: Mapping[str, Any]) -> str:
    parts = []
    if "http.route" in attributes:
        parts.append(str(attributes["http.route"]))
    if "rpc.method" in attributes and attributes.get("rpc.method") != attributes.get("http.route"):
        parts.append(str(attributes["rpc.method"]))
    for key in ("http.status_code", "rpc.status_code"):
        if key in attributes:
            parts.append(f"[{attributes[key]}]")
    if "db.statement" in attributes:
        parts.append(f'"{attributes["db.statement"]}"')
    elif "db.operation" in attributes:
        parts.append(str(attributes["db.operation"]))
    return " ".join(parts)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def print_waterfall(trace: Mapping[str, Any]) -> None:
    """One line per span: time bar, start offset, duration, status, then the indented name and details."""
    width = _terminal_width()
    duration = trace["duration_ms"]
    services = ", ".join(trace["services"])
    print(
        _fit(
            f"Trace {trace['trace_id']}  {format_ms(duration)}  {plural(trace['span_count'], 'span')}  "
            f"{trace['status']}  ({services})",
            width,
        )
    )
    label_width = width - BAR_WIDTH - 25
    print(f"{'0':<{BAR_WIDTH // 2}}{format_ms(duration):>{BAR_WIDTH // 2}} {'Start':>8} {'Duration':>8} St  Span")
    for span in trace["spans"]:
        start, end = bar_fraction(span, duration)
        status = "ERR" if span["error"] else ("ok" if span["status"] == "OK" else "-")
        details = _attributes_text(span["attributes"])
        label = f"{'  ' * span['depth']}{span['name']} · {span['service']}"
        if details:
            label += f" {details}"
        if span["error"] and span.get("status_message"):
            label += f" ! {span['status_message']}"
        print(
            f"{time_bar(start, end)} {'+' + format_ms(span['offset_ms']):>8} {format_ms(span['duration_ms']):>8} "
            f"{status:<3} {_fit(label, label_width)}"
        )


def sparkline(values: Sequence[float | None], width: int = SPARK_WIDTH) -> str:
    """`values` as block characters, at most `width` wide (neighbouring values merged by their maximum).

    A missing value (no requests, no percentile) is a space; the scale runs from 0 to the maximum.
    """
    if not values:
        return ""
    chunk = max(1, -(-len(values) // width))
    merged: list[float | None] = []
    for index in range(0, len(values), chunk):
        present = [v for v in values[index : index + chunk] if v is not None]
        merged.append(max(present) if present else None)
    top = max((v for v in merged if v is not None), default=0.0)
    cells = []
    for value in merged:
        if value is None:
            cells.append(" ")
        elif top <= 0:
            cells.append(_SPARKS[0])
        else:
            cells.append(_SPARKS[min(int(value / top * (len(_SPARKS) - 1) + 0.5), len(_SPARKS) - 1)])
    return "".join(cells)


def _clock(unix: float) -> str:
    return datetime.fromtimestamp(unix).strftime("%H:%M:%S")


def _spark_cells(buckets: Sequence[Mapping[str, Any]]) -> list[str]:
    rates = [b["rate_per_s"] if b["requests"] else None for b in buckets]
    errors = [float(b["errors"]) if b["requests"] else None for b in buckets]
    p99 = [b["p99_ms"] for b in buckets]
    peak_rate = max((r for r in rates if r is not None), default=0.0)
    peak_p99 = max((p for p in p99 if p is not None), default=None)
    return [
        f"{sparkline(rates)} {format_rate(peak_rate)}",
        f"{sparkline(errors)} {int(sum(b['errors'] for b in buckets))}",
        f"{sparkline(p99)} {format_ms(peak_p99)}",
    ]


_GROUP_COLUMNS = {
    "http": (("Method", "method"), ("Route", "route")),
    "grpc": (("Method", "method"),),
    "sql": (("Operation", "operation"), ("Table", "table")),
    "messaging": (("Operation", "operation"), ("Destination", "destination")),
}


def print_timeline(result: Mapping[str, Any], params: Mapping[str, Any], *, width: int | None = None) -> None:
    """A row per group with sparklines of rate (peak shown), errors (total) and p99 (peak), and the total."""
    kind = result["kind"]
    buckets = result["buckets"]
    window = result["window"]
    title = (
        f"{kind.upper() if kind != 'grpc' else 'gRPC'} over time — {_clock(window['start'])} to "
        f"{_clock(window['end'])}, {plural(len(buckets), 'bucket')} of {format_ms(result['by'] * 1000)} "
        f"({result['side']} side)"
    )
    if not result["series"]:
        print(f"{title}\nNo requests in this window; try a longer --since or another --service.")
        return
    group_columns = _GROUP_COLUMNS[kind]
    columns = [
        text("Service", shrink=Shrink.MIDDLE, min_width=10),
        *(text(h, shrink=Shrink.MIDDLE) for h, _ in group_columns),
        number("Requests"),
        text("Rate/s (peak)", shrink=Shrink.NEVER),
        text("Errors (total)", shrink=Shrink.NEVER, drop_order=1),
        text("P99 (peak)", shrink=Shrink.NEVER),
    ]
    rows = [
        [
            series["service"],
            *(series.get(key) or "" for _, key in group_columns),
            series["requests"],
            *_spark_cells(series["buckets"]),
        ]
        for series in result["series"]
    ]
    total_requests = sum(b["requests"] for b in buckets)
    rows.append(["All", *("" for _ in group_columns), total_requests, *_spark_cells(buckets)])
    print_grid(
        columns, rows, width=width, title=title, footer=f"Since {params.get('since', '15m')}, by {params.get('by')}"
    )
