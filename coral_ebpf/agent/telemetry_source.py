"""The agent as a `TelemetrySource`: its status document and the RED totals as Prometheus
families, and the verdicts of `/-/healthy` and `/-/ready`.

Built from `Agent.status()` (the same document `coral-ebpf status --json` shows), never from
a part's internals, so the figures and the status agree. Every counter here is one the part
keeps in memory and only increases while the agent runs.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from coral_ebpf import __version__
from coral_ebpf.state import PartState
from coral_ebpf.telemetry.exposition import Labels, MetricFamily, MetricType, Sample
from coral_ebpf.telemetry.red_totals import RedTotals
from coral_ebpf.telemetry.source import Health

StatusDocument = dict[str, Any]

# Part states that mean "doing its job".
UP_STATES = frozenset({PartState.RUNNING, PartState.OK, PartState.STANDBY})
# How the receiver's signals are called in metric labels (spans, points, log records).
_ITEM_KINDS = {"traces": "spans", "metrics": "points", "logs": "log_records"}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class _Families:
    """Collects families; a sample with no value (the part did not report it) is left out."""

    def __init__(self) -> None:
        self.families: list[MetricFamily] = []

    def add(
        self,
        name: str,
        help_text: str,
        kind: MetricType,
        samples: Iterable[tuple[Labels, Any]],
        unit: str = "",
    ) -> None:
        kept = [Sample(labels, number) for labels, value in samples if (number := _number(value)) is not None]
        self.families.append(MetricFamily(name, help_text, kind, unit=unit, samples=kept))

    def one(self, name: str, help_text: str, kind: MetricType, value: Any, unit: str = "") -> None:
        self.add(name, help_text, kind, [((), value)], unit)


def _transports(document: StatusDocument) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """(transport label, signals) of the public receiver and of Beyla's private link (`beyla_link_http`, ...)."""
    for prefix, body in (
        ("", document.get("receiver", {})),
        ("beyla_link_", document.get("beyla", {}).get("link", {})),
    ):
        for transport in ("grpc", "http"):
            signals = body.get(transport, {}).get("signals") if isinstance(body.get(transport), dict) else None
            if signals:
                yield prefix + transport, signals


def _receiver(families: _Families, document: StatusDocument) -> None:
    items: list[tuple[Labels, Any]] = []
    requests: list[tuple[Labels, Any]] = []
    received_bytes: list[tuple[Labels, Any]] = []
    errors: list[tuple[Labels, Any]] = []
    for transport, signals in _transports(document):
        for signal, counters in signals.items():
            base = (("transport", transport), ("signal", signal))
            kind = _ITEM_KINDS.get(signal, "")
            for outcome in ("accepted", "rejected", "refused"):
                items.append(((*base, ("kind", kind), ("outcome", outcome)), counters.get(f"items_{outcome}")))
            requests.append((base, counters.get("requests")))
            received_bytes.append((base, counters.get("bytes_in")))
            for code, count in (counters.get("errors") or {}).items():
                errors.append(((*base, ("code", str(code))), count))
    families.add(
        "coral_ebpf_receiver_items",
        "OTLP items received (spans, metric points, log records) by transport (beyla_link_*: Beyla's private "
        "listener), signal and outcome: accepted "
        "(stored), rejected (refused for good, partial success) or refused (queue full, the sender retries).",
        MetricType.COUNTER,
        items,
    )
    families.add("coral_ebpf_receiver_requests", "OTLP export requests received.", MetricType.COUNTER, requests)
    families.add(
        "coral_ebpf_receiver_received_bytes",
        "OTLP request bodies received, as sent (compressed when they were).",
        MetricType.COUNTER,
        received_bytes,
        unit="bytes",
    )
    families.add(
        "coral_ebpf_receiver_errors",
        "OTLP requests answered with an error, by HTTP status or gRPC code.",
        MetricType.COUNTER,
        errors,
    )


def _storage(families: _Families, storage: Mapping[str, Any], now: float) -> None:
    depth = _number(storage.get("queue_depth"))
    last_write = _number(storage.get("last_write"))
    # Write lag: how long queued data has waited for the writer's last commit (0 when nothing waits).
    lag = 0.0 if not depth else (now - last_write if last_write is not None else None)
    families.one("coral_ebpf_storage_queue_batches", "Batches waiting for the writer.", MetricType.GAUGE, depth)
    families.one(
        "coral_ebpf_storage_queue_capacity_batches",
        "Batches the write queue holds before senders are told to retry.",
        MetricType.GAUGE,
        storage.get("queue_capacity"),
    )
    families.one(
        "coral_ebpf_storage_queue_bytes",
        "Bytes of the batches waiting for the writer.",
        MetricType.GAUGE,
        storage.get("queue_bytes"),
        unit="bytes",
    )
    families.one(
        "coral_ebpf_storage_write_lag_seconds",
        "Seconds since the writer's last commit while batches wait (0 when the queue is empty).",
        MetricType.GAUGE,
        lag,
        unit="seconds",
    )
    rows = storage.get("rows_written") or {}
    families.add(
        "coral_ebpf_storage_rows_written",
        "Rows committed to the database, by table.",
        MetricType.COUNTER,
        [((("table", table),), count) for table, count in rows.items()],
    )
    for name, key, help_text in (
        ("coral_ebpf_storage_write_errors", "write_errors", "Database writes that failed (and were retried)."),
        ("coral_ebpf_storage_rows_lost", "rows_lost", "Rows that could not be stored and were dropped."),
        ("coral_ebpf_storage_rows_expired", "rows_expired", "Rows deleted by retention."),
        (
            "coral_ebpf_storage_duplicate_spans_dropped",
            "duplicate_spans_dropped",
            "Spans not stored because the same trace and span id was stored already (sender retries).",
        ),
    ):
        families.one(name, help_text, MetricType.COUNTER, storage.get(key))
    families.add(
        "coral_ebpf_storage_file_bytes",
        "Size of the database file and its write-ahead log.",
        MetricType.GAUGE,
        [((("file", "database"),), storage.get("db_size_bytes")), ((("file", "wal"),), storage.get("wal_size_bytes"))],
        unit="bytes",
    )


def _beyla(families: _Families, beyla: Mapping[str, Any]) -> None:
    state = str(beyla.get("state", "unknown"))
    families.add(
        "coral_ebpf_beyla_state",
        "The Beyla supervisor's state (1 for the current one).",
        MetricType.GAUGE,
        [((("state", state),), 1)],
    )
    families.one("coral_ebpf_beyla_restarts", "Times Beyla was restarted.", MetricType.COUNTER, beyla.get("restarts"))
    families.one("coral_ebpf_beyla_starts", "Times Beyla was started.", MetricType.COUNTER, beyla.get("starts"))
    families.one(
        "coral_ebpf_beyla_resident_memory_bytes",
        "Beyla's resident set size.",
        MetricType.GAUGE,
        beyla.get("rss_bytes"),
        unit="bytes",
    )
    families.one(
        "coral_ebpf_beyla_services", "Services in Beyla's current config.", MetricType.GAUGE, beyla.get("services")
    )


def _discovery(families: _Families, discovery: Mapping[str, Any]) -> None:
    families.one("coral_ebpf_discovery_services", "Services discovered.", MetricType.GAUGE, discovery.get("services"))
    families.add(
        "coral_ebpf_discovery_events",
        "Kernel events discovery received, by kind.",
        MetricType.COUNTER,
        [((("event", kind),), count) for kind, count in (discovery.get("events") or {}).items()],
    )
    families.add(
        "coral_ebpf_discovery_lost_events",
        "Kernel events lost before discovery read them (buffer overrun), by source.",
        MetricType.COUNTER,
        [((("source", source),), count) for source, count in (discovery.get("lost") or {}).items()],
    )
    families.one(
        "coral_ebpf_discovery_resyncs",
        "Full /proc rescans after lost events.",
        MetricType.COUNTER,
        discovery.get("resyncs"),
    )


def _red(families: _Families, red: Mapping[str, Any]) -> None:
    engine = str(red.get("engine") or "none")
    labels: Labels = (("engine", engine),)
    families.one(
        "coral_ebpf_red_engine_requests",
        "Requests the built-in RED engine measured.",
        MetricType.COUNTER,
        red.get("requests") if engine == "bcc" else None,
    )
    families.one(
        "coral_ebpf_red_engine_errors",
        "Requests the built-in RED engine counted as errors.",
        MetricType.COUNTER,
        red.get("errors") if engine == "bcc" else None,
    )
    families.one(
        "coral_ebpf_red_engine_ignored_requests",
        "Requests to red.ignored_routes the built-in RED engine left out of metrics and traces.",
        MetricType.COUNTER,
        red.get("ignored_requests") if engine == "bcc" else None,
    )
    families.one(
        "coral_ebpf_red_engine_not_found_folded",
        "404 requests the built-in RED engine reported under the one route /** (red.fold_not_found).",
        MetricType.COUNTER,
        red.get("not_found_folded") if engine == "bcc" else None,
    )
    families.one(
        "coral_ebpf_red_engine_sampled_away_spans",
        "Spans the built-in RED engine did not keep (red.sampling); their requests are in the metrics.",
        MetricType.COUNTER,
        red.get("sampled_away_spans") if engine == "bcc" else None,
    )
    kernel = red.get("kernel") or {}
    families.one(
        "coral_ebpf_red_engine_lost_events",
        "Events the built-in RED engine's probe lost (ring or perf buffer full).",
        MetricType.COUNTER,
        kernel.get("events_lost"),
    )
    families.add(
        "coral_ebpf_red_engine_active",
        "Which RED engine serves (1 for the current one).",
        MetricType.GAUGE,
        [(labels, 1)],
    )


def _export(families: _Families, export: Mapping[str, Any]) -> None:
    items = export.get("exported_items") or {}
    families.add(
        "coral_ebpf_export_items",
        "Items (spans, metric points, log records) the upstream OTLP endpoint took, by signal.",
        MetricType.COUNTER,
        [((("signal", signal),), count) for signal, count in items.items()],
    )
    for name, key, help_text in (
        ("coral_ebpf_export_requests", "exported_requests", "Export requests the upstream took."),
        ("coral_ebpf_export_retries", "retries", "Export attempts that failed and will be retried."),
        ("coral_ebpf_export_failed_requests", "failed_requests", "Export requests the upstream refused for good."),
        ("coral_ebpf_export_rejected_items", "rejected_items", "Items the upstream rejected in partial successes."),
        ("coral_ebpf_export_dropped_requests", "dropped_requests", "Queued requests dropped: the queue was full."),
        ("coral_ebpf_export_refused_requests", "refused_requests", "Requests refused: the queue was full (refuse)."),
        ("coral_ebpf_export_queue_syncs", "queue_syncs", "Group syncs of the export queue, each for many requests."),
        ("coral_ebpf_export_temporality_converted_points", "temporality_converted_points",
         "Metric points converted to export.otlp.temporality."),
        ("coral_ebpf_export_temporality_baselined_points", "temporality_baselined_points",
         "Cumulative points kept as a series' baseline, not exported (the series began before the agent)."),
    ):  # fmt: skip
        families.one(name, help_text, MetricType.COUNTER, export.get(key))
    families.one(
        "coral_ebpf_export_queue_requests", "Requests waiting in the export queue.", MetricType.GAUGE,
        export.get("queue_requests"),
    )  # fmt: skip
    families.one(
        "coral_ebpf_export_queue_bytes",
        "Bytes waiting in the export queue on disk.",
        MetricType.GAUGE,
        export.get("queue_bytes"),
        unit="bytes",
    )
    families.one(
        "coral_ebpf_export_last_error_timestamp_seconds",
        "When the last export error happened (unix time).",
        MetricType.GAUGE,
        export.get("last_error_at"),
        unit="seconds",
    )


def agent_families(document: StatusDocument, now: float | None = None) -> list[MetricFamily]:
    """The agent's own metrics from its status document."""
    now = time.time() if now is None else now
    agent = document.get("agent", {})
    families = _Families()
    families.add(
        "coral_ebpf_build",
        "Version of the agent and of the Python running it.",
        MetricType.INFO,
        [((("version", __version__), ("python", platform.python_version())), 1)],
    )
    families.one(
        "coral_ebpf_start_time_seconds",
        "When the agent started (unix time).",
        MetricType.GAUGE,
        agent.get("started"),
        unit="seconds",
    )
    families.add(
        "coral_ebpf_part_up",
        "1 when a part of the agent is doing its job (running, serving, ok or standby), else 0; parts the "
        "config disables are left out.",
        MetricType.GAUGE,
        [
            ((("part", part), ("state", str(body.get("state")))), 1 if body.get("state") in UP_STATES else 0)
            for part, body in document.items()
            # A part switched off by the config is not down: it has no series.
            if part != "agent" and isinstance(body, dict) and "state" in body and body["state"] != "disabled"
        ],
    )
    _receiver(families, document)
    _storage(families, document.get("storage", {}), now)
    _beyla(families, document.get("beyla", {}))
    _discovery(families, document.get("discovery", {}))
    _red(families, document.get("red", {}))
    _export(families, document.get("export", {}))
    return families.families


def readiness(document: StatusDocument) -> Health:
    """Ready when the receiver listens and the storage writes; the reason names what is not."""
    receiver = document.get("receiver", {})
    storage = document.get("storage", {})
    problems = []
    if receiver.get("state") != PartState.RUNNING:
        problems.append(f"receiver is {receiver.get('state', 'absent')} ({receiver.get('reason', 'no reason given')})")
    if storage.get("state") != PartState.RUNNING:
        problems.append(f"storage is {storage.get('state', 'absent')} ({storage.get('reason', 'no reason given')})")
    notes = [str(note) for note in receiver.get("notes", []) if note]
    if problems:
        return Health(False, "not ready: " + "; ".join(problems + notes))
    addresses = [
        f"{transport} {receiver[transport]['address']}"
        for transport in ("grpc", "http")
        if isinstance(receiver.get(transport), dict) and receiver[transport].get("address")
    ]
    listening = ", ".join(addresses) or "no OTLP listener (both disabled)"
    return Health(True, "; ".join([f"ready: OTLP on {listening}, storage writing", *notes]))


class AgentTelemetry:
    """A `TelemetrySource` over the agent's status function and the RED totals."""

    def __init__(self, status: Callable[[], StatusDocument], red: RedTotals) -> None:
        self._status = status
        self._red = red

    def collect(self) -> Sequence[MetricFamily]:
        return [*self._red.families(), *agent_families(self._status())]

    def healthy(self) -> Health:
        document = self._status()
        agent = document.get("agent", {})
        storage = document.get("storage", {})
        if storage.get("state") == "failed":
            return Health(False, f"unhealthy: the storage writer failed ({storage.get('last_error', '')})")
        return Health(True, f"alive: coral-ebpf {agent.get('version', '?')} pid {agent.get('pid', '?')}")

    def ready(self) -> Health:
        return readiness(self._status())
