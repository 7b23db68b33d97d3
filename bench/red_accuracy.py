"""Accuracy of the built-in RED engine: exact counts, and percentiles within one bucket of the truth.

A known mix of requests (routes, statuses, server-side delays drawn from fixed ranges with a fixed
seed) is sent by 8 concurrent keep-alive clients to a traced server (http.server or uvicorn) in a
private network namespace. The engine's exported histograms are compared with what was sent:
counts per (route, status) must be equal, and the p50/p99 interpolated from the buckets (like
PromQL's histogram_quantile) must fall in the same bucket as the true p50/p99 of the known
delays, or a neighbouring one. Last line: `accuracy: <exact series>/<series> counts exact,
<ok>/<checked> percentiles within one bucket`. Needs root.

    .venv/bin/python bench/red_accuracy.py [--server python|uvicorn] [--requests 600]
"""

from __future__ import annotations

import argparse
import bisect
import http.client
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
from coral_ebpf.red.records import BUCKETS  # noqa: E402
from coral_ebpf.red.settings import RedSettings  # noqa: E402
from tests.helpers.consumertest import Sink  # noqa: E402
from tests.helpers.netns import enter_private_netns  # noqa: E402
from tests.helpers.red_support import points, server  # noqa: E402

# route -> (share of requests, delay range in ms, path template)
MIX = {
    ("/api/fast", 200): (0.45, (1, 20), "/api/fast"),
    ("/api/medium", 200): (0.25, (20, 90), "/api/medium"),
    ("/api/slow", 200): (0.08, (150, 400), "/api/slow"),
    ("/users/*", 200): (0.12, (5, 60), "/users/{n}"),
    ("/fail", 500): (0.06, (1, 30), "/fail"),
    ("/**", 404): (0.04, (1, 10), "/missing/item"),  # red.fold_not_found
}


def plan(total: int, seed: int) -> list[tuple[tuple[str, int], str, float]]:
    rng = random.Random(seed)
    requests = []
    for key, (share, (low, high), template) in MIX.items():
        for _ in range(round(total * share)):
            delay = rng.uniform(low, high)
            path = template.replace("{n}", str(rng.randint(1, 10_000)))
            requests.append((key, f"{path}?ms={delay:.3f}", delay / 1000.0))
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


def quantile(q: float, buckets: list[int]) -> float:
    """histogram_quantile over explicit buckets (linear within the bucket)."""
    total = sum(buckets)
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if seen + count >= rank and count:
            low = BUCKETS[index - 1] if index > 0 else 0.0
            high = BUCKETS[index] if index < len(BUCKETS) else BUCKETS[-1]
            return low + (high - low) * (rank - seen) / count
        seen += count
    return BUCKETS[-1]


def bucket_of(seconds: float) -> int:
    return bisect.bisect_left(BUCKETS, seconds)


def true_quantile(q: float, values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


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
    buckets: dict[tuple[str, int], list[int]] = {}
    for point in points(consumer, pid):
        key = (point.attributes["http.route"], point.attributes["http.response.status_code"])
        got[key] += point.count
        merged = buckets.setdefault(key, [0] * (len(BUCKETS) + 1))
        for index, count in enumerate(point.buckets):
            merged[index] += count

    exact = 0
    checked = 0
    within = 0
    print(f"{'route':<16}{'status':>7}{'sent':>6}{'stored':>7}   p50 true/est (ms)   p99 true/est (ms)")
    for key in sorted(sent):
        ok = got.get(key, 0) == sent[key]
        exact += ok
        cells = []
        for q in (0.5, 0.99):
            truth = true_quantile(q, delays[key])
            estimate = quantile(q, buckets.get(key, [0] * (len(BUCKETS) + 1)))
            checked += 1
            close = abs(bucket_of(truth) - bucket_of(estimate)) <= 1
            within += close
            cells.append(f"{truth * 1000:8.1f}/{estimate * 1000:7.1f}{'' if close else ' !'}")
        print(f"{key[0]:<16}{key[1]:>7}{sent[key]:>6}{got.get(key, 0):>7}   " + "   ".join(cells))
    extra = set(got) - set(sent)
    if extra:
        print(f"unexpected series: {sorted(extra)}")
    measured = points(consumer, pid)
    mean_measured = sum(point.total for point in measured) / max(1, sum(point.count for point in measured))
    mean_overhead = mean_measured - statistics.mean(delay for _, _, delay in requests)
    print(f"mean measured minus mean known delay: {mean_overhead * 1000:.2f} ms")
    print(f"accuracy: {exact}/{len(sent)} counts exact, {within}/{checked} percentiles within one bucket")


if __name__ == "__main__":
    main()
