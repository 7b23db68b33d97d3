"""Accuracy of the built-in RED engine: exact counts, and p50/p99 within 2 % of the true durations.

A known mix of requests (routes, statuses, server-side delays drawn from fixed ranges with a fixed
seed, from sub-millisecond to several seconds) is sent by 8 concurrent keep-alive clients to a
traced server (http.server or uvicorn) in a private network namespace. The engine's exported
exponential histograms are compared with what happened:
- counts per (route, status) must equal what was sent;
- p50/p99 from the merged histograms (the query's method: exponential interpolation inside a
  bucket, storage/exponential.py) against the true p50/p99 of the same requests' server-side
  durations, which are the engine's own SERVER spans (one per request, nanosecond start and end
  from the kernel). The requested delay is not the truth: the server adds its own work
  (0.1-1 ms), which matters for sub-millisecond routes; the mean of that overhead is printed.
Last line: `accuracy: worst <pct> %` (the largest relative error of any p50/p99). Needs root.

    .venv/bin/python bench/red_accuracy.py [--server python|uvicorn] [--requests 600]
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coral_ebpf.red.engine import RedEngine  # noqa: E402
from coral_ebpf.red.settings import RedSettings  # noqa: E402
from coral_ebpf.storage import exponential  # noqa: E402
from coral_ebpf.storage.exponential import ExpBuckets  # noqa: E402
from tests.helpers.consumertest import Sink  # noqa: E402
from tests.helpers.netns import enter_private_netns  # noqa: E402
from tests.helpers.red_support import attrs, points, server, spans  # noqa: E402

# route -> (share of requests, delay range in ms, path template)
MIX = {
    ("/api/instant", 200): (0.12, (0, 0), "/api/instant"),  # only the server's own work: well under 1 ms
    ("/api/sub", 200): (0.12, (0.1, 0.9), "/api/sub"),
    ("/api/fast", 200): (0.21, (1, 20), "/api/fast"),
    ("/api/medium", 200): (0.25, (20, 90), "/api/medium"),
    ("/api/slow", 200): (0.08, (150, 400), "/api/slow"),
    ("/users/*", 200): (0.12, (5, 60), "/users/{n}"),
    ("/fail", 500): (0.06, (1, 30), "/fail"),
    ("/**", 404): (0.04, (1, 10), "/missing/item"),  # red.fold_not_found
    ("/api/long", 200): (0.02, (1500, 4000), "/api/long"),  # multi-second
}


def plan(total: int, seed: int) -> list[tuple[tuple[str, int], str, float]]:
    rng = random.Random(seed)
    requests = []
    for key, (share, (low, high), template) in MIX.items():
        for _ in range(round(total * share)):
            delay = rng.uniform(low, high)
            path = template.replace("{n}", str(rng.randint(1, 10_000)))
            requests.append((key, f"{path}?ms={delay:.4f}", delay / 1000.0))
    rng.shuffle(requests)
    return requests


def send_all(port: int, requests: list[tuple[tuple[str, int], str, float]], clients: int) -> None:
    shards = [requests[index::clients] for index in range(clients)]

    def run(shard: list[tuple[tuple[str, int], str, float]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for (_, status), path, _ in shard:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == status, (path, response.status)
        conn.close()

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, shards))


def true_quantile(q: float, values: list[float]) -> float:
    """The q-quantile of the observations: the smallest value with at least q of them at or below it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def span_durations(consumer: Sink, pid: int) -> dict[tuple[str, int], list[float]]:
    """(route, status) -> the duration in seconds of every SERVER span the engine emitted."""
    durations: dict[tuple[str, int], list[float]] = defaultdict(list)
    for _, span in spans(consumer, pid):
        attributes = attrs(span.attributes)
        key = (attributes["http.route"], attributes["http.response.status_code"])
        durations[key].append((span.end_time_unix_nano - span.start_time_unix_nano) / 1e9)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["python", "uvicorn"], default="python")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/red_accuracy.py needs root (BPF and a private network namespace)")
    enter_private_netns()
    requests = plan(args.requests, args.seed)
    state_dir = Path(tempfile.mkdtemp(prefix="coral-red-accuracy-"))
    consumer = Sink()
    engine = RedEngine(RedSettings(engine="bcc", export_interval=3600), consumer, state_dir)
    engine.start()
    try:
        with server(args.server) as proc:
            engine.set_targets([proc.entry()])
            started = time.monotonic()
            send_all(proc.port, requests, args.clients)
            print(f"sent {len(requests)} requests in {time.monotonic() - started:.1f}s", flush=True)
            time.sleep(0.5)
            engine.flush()
            pid = proc.pid
    finally:
        engine.stop(10)
        shutil.rmtree(state_dir, ignore_errors=True)

    sent: Counter[tuple[str, int]] = Counter(key for key, _, _ in requests)
    delays: dict[tuple[str, int], list[float]] = defaultdict(list)
    for key, _, delay in requests:
        delays[key].append(delay)
    got: Counter[tuple[str, int]] = Counter()
    histograms: dict[tuple[str, int], list[ExpBuckets]] = defaultdict(list)
    for point in points(consumer, pid):
        key = (point.attributes["http.route"], point.attributes["http.response.status_code"])
        got[key] += point.count
        histograms[key].append(point.exponential)
    truths = span_durations(consumer, pid)

    exact = 0
    worst = 0.0
    print(f"{'route':<16}{'status':>7}{'sent':>6}{'stored':>7}{'spans':>7}   p50 true/est (ms)      p99 true/est (ms)")
    for key in sorted(sent):
        ok = got.get(key, 0) == sent[key]
        exact += ok
        merged = exponential.merge(histograms.get(key, []))
        cells = []
        for q in (0.5, 0.99):
            durations = truths.get(key, [])
            estimate = None if merged is None else exponential.quantile(q, merged)
            if not durations or estimate is None:
                cells.append(f"{'-':>20}")
                worst = math.inf
                continue
            truth = true_quantile(q, durations)
            error = abs(estimate - truth) / truth * 100
            worst = max(worst, error)
            cells.append(f"{truth * 1000:9.3f}/{estimate * 1000:9.3f} {error:4.2f}%")
        spans_seen = len(truths.get(key, []))
        print(f"{key[0]:<16}{key[1]:>7}{sent[key]:>6}{got.get(key, 0):>7}{spans_seen:>7}   " + "   ".join(cells))
    extra = set(got) - set(sent)
    if extra:
        print(f"unexpected series: {sorted(extra)}")
    measured = points(consumer, pid)
    mean_measured = sum(point.total for point in measured) / max(1, sum(point.count for point in measured))
    mean_overhead = mean_measured - statistics.mean(delay for _, _, delay in requests)
    print(f"mean measured minus mean known delay: {mean_overhead * 1000:.2f} ms")
    print(f"counts: {exact}/{len(sent)} series exact")
    print(f"accuracy: worst {worst:.2f} %")


if __name__ == "__main__":
    main()
