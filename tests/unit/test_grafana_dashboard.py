"""The shipped Grafana dashboard parses and every PromQL expression in it names metrics the agent exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coral_ebpf.agent.telemetry_source import agent_families
from coral_ebpf.telemetry.exposition import MetricType
from coral_ebpf.telemetry.red_totals import RedTotals

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "coral-ebpf.json"

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def exported_series_names() -> set[str]:
    """Every series name /metrics can carry (families are listed even before they have samples)."""
    names: set[str] = set()
    for family in [*RedTotals().families(), *agent_families({})]:
        if family.type is MetricType.HISTOGRAM:
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        elif family.type is MetricType.COUNTER:
            names.add(f"{family.name}_total")
        elif family.type is MetricType.INFO:
            names.add(f"{family.name}_info")
        else:
            names.add(family.name)
    return names


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords, labels or durations)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = _GROUPING.sub("", text)  # label lists
    names = set()
    for match in _NAME.finditer(text):
        name, rest = match.group(), text[match.end() :].lstrip()
        if rest.startswith("(") or name in _KEYWORDS or (match.start() and text[match.start() - 1].isdigit()):
            continue
        names.add(name)
    return names


def expressions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
                yield value["query"]
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def test_metric_name_extraction() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, http_route) (rate(x_bucket{a=~"b{1}"}[5m]))) / on (a) y_total offset 5m'
    ) == {"x_bucket", "y_total"}
    assert metric_names("label_values(h_count, service_name)") == {"h_count", "service_name"}


def test_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["panels"]
    found = list(expressions(dashboard))
    assert len(found) >= 20
    exported = exported_series_names()
    labels = {"service_name"}  # label_values(metric, label): the label is not a metric
    for expression in found:
        unknown = metric_names(expression) - exported - labels
        assert not unknown, f"{expression!r} uses {sorted(unknown)}, which the agent does not export"
    panel_titles = " ".join(panel["title"] for panel in dashboard["panels"])
    for topic in ("HTTP", "gRPC", "SQL", "Beyla", "queue", "Discovery"):
        assert topic in panel_titles


def test_every_panel_has_a_unique_id_and_a_prometheus_target() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel["title"]
