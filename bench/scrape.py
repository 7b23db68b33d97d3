"""`/metrics` scrape time and size for 50 services x 20 routes x 5 status codes (5,000 HTTP series).

    .venv/bin/python bench/scrape.py [--services 50] [--routes 20] [--statuses 5] [--scrapes 20]

The RED totals are filled the way the agent fills them (delta rows with Beyla's 15 bounds, as
Arrow tables through `RedTotals.observe`), then served by a real `OperatorServer` on loopback
and scraped over HTTP, as Prometheus does (`Accept: application/openmetrics-text`,
`Accept-Encoding: gzip`) and as a plain `curl` does (0.0.4 text, uncompressed). The figure is
the median wall time of a Prometheus-style scrape, request to last byte.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coral_ebpf.agent.telemetry_source import agent_families
from coral_ebpf.storage.schema import HTTP_METRICS, arrow_array, arrow_schema
from coral_ebpf.telemetry.exposition import MetricFamily
from coral_ebpf.telemetry.red_totals import RedTotals
from coral_ebpf.telemetry.server import OperatorServer
from coral_ebpf.telemetry.settings import TelemetrySettings
from coral_ebpf.telemetry.source import Health

BOUNDS = [0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
STATUSES = (200, 201, 404, 500, 503, 302, 400)
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def fill(totals: RedTotals, services: int, routes: int, statuses: int) -> int:
    rows = [
        (f"svc-{s:02d}", f"/api/v{s % 3}/resource-{r:02d}/{{id}}", STATUSES[c % len(STATUSES)])
        for s in range(services)
        for r in range(routes)
        for c in range(statuses)
    ]
    columns: dict[str, list[Any]] = {
        "timestamp": [1_790_000_000_000_000_000] * len(rows),
        "start_time": [1_790_000_000_000_000_000] * len(rows),
        "agent_id": ["bench"] * len(rows),
        "resource_id": [hash(row[0]) & 0xFFFF for row in rows],
        "service_name": [row[0] for row in rows],
        "service_namespace": ["shop"] * len(rows),
        "telemetry_sdk_name": ["beyla"] * len(rows),
        "metric_name": ["http.server.request.duration"] * len(rows),
        "side": ["server"] * len(rows),
        "http_method": ["GET"] * len(rows),
        "http_route": [row[1] for row in rows],
        "http_status_code": [row[2] for row in rows],
        "unit": ["s"] * len(rows),
        "count": [120] * len(rows),
        "sum_s": [3.2] * len(rows),
        "bounds_s": [BOUNDS] * len(rows),
        "bucket_counts": [[0, 10, 20, 30, 20, 10, 10, 10, 5, 3, 1, 1, 0, 0, 0, 0]] * len(rows),
        "source_temporality": ["delta"] * len(rows),
    }
    schema = arrow_schema(HTTP_METRICS.name)
    table = pa.table(
        {field.name: arrow_array(columns.get(field.name, [None] * len(rows)), field.type) for field in schema},
        schema=schema,
    )
    totals.observe({HTTP_METRICS.name: table})
    totals.observe({HTTP_METRICS.name: table})  # a second delta on every series, as after two exports
    return len(rows)


class BenchSource:
    def __init__(self, totals: RedTotals) -> None:
        self.totals = totals

    def collect(self) -> Sequence[MetricFamily]:
        return [*self.totals.families(), *agent_families({})]

    def healthy(self) -> Health:
        return Health(True, "alive")

    def ready(self) -> Health:
        return Health(True, "ready")


def scrape(server: OperatorServer, headers: dict[str, str], count: int) -> tuple[list[float], list[float], int]:
    """(wall ms per scrape, server-side CPU ms per scrape, body size)."""
    url = f"http://{server.address}/metrics"
    times, cpu, size = [], [], 0
    for _ in range(count):
        started = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:
            size = len(response.read())
        times.append((time.perf_counter() - started) * 1000)
        cpu.append(server.last_scrape_cpu_ms or 0.0)
    return times, cpu, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--routes", type=int, default=20)
    parser.add_argument("--statuses", type=int, default=5)
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()
    totals = RedTotals()
    series = fill(totals, args.services, args.routes, args.statuses)
    server = OperatorServer(TelemetrySettings(endpoint="127.0.0.1:0"), BenchSource(totals))
    server.start()
    try:
        scrape(server, {}, 2)  # warm the label caches, as every scrape after the first finds them
        plain, plain_cpu, plain_size = scrape(server, {}, args.scrapes)
        prometheus = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
        prom, prom_cpu, prom_size = scrape(server, prometheus, args.scrapes)
    finally:
        server.stop(5)
    print(f"series: {series} HTTP histograms x {len(BOUNDS) + 1} buckets, {args.scrapes} scrapes each")
    for label, wall, cpu, size in (
        ("text 0.0.4, uncompressed", plain, plain_cpu, plain_size),
        ("OpenMetrics + gzip (Prometheus)", prom, prom_cpu, prom_size),
    ):
        print(
            f"{label}: median {statistics.median(wall):.1f} ms (best {min(wall):.1f}), "
            f"server CPU median {statistics.median(cpu):.1f} ms, {size / 1e6:.2f} MB"
        )
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"scrape: {statistics.median(prom):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
