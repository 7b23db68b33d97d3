"""Transform + storage throughput: Beyla-shaped span batches through TransformProcessor into DuckDB.

No network: each request is parsed from bytes (as the receiver does) and handed to the
processor, which flattens it and queues it for the writer thread; with `--path serialized`
the bytes go straight to `consume_traces_serialized` (the receiver's fast path). Spans count
once they are written and queryable (the run ends with a flush and a COUNT(*)). When the
write queue is full the loop backs off, as an OTLP client would on 429.

The machine's cores are shared: besides wall-clock rates it prints CPU seconds used, which
say more when other work competes for the cores.

Usage: python bench/transform_store.py [--seconds N] [--batch 512] [--path decoded|serialized]
Last line: `transform+store: <N> spans/s`.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from coral_ebpf.agent.config import parse_config_text
from coral_ebpf.consumer import QueueFullError
from coral_ebpf.storage.writer import Storage
from coral_ebpf.transform.processor import TransformProcessor
from tests.helpers.beyla_otlp import (
    beyla_resource,
    http_server_span,
    sql_client_span,
    trace_request,
)

ROUTES = [
    ("GET", "/api/users/{id}", "/api/users/"),
    ("POST", "/api/orders", "/api/orders"),
    ("GET", "/health", "/health"),
]


def make_requests(count: int, batch: int, seed: int = 7) -> list[bytes]:
    """Distinct requests (ids differ), each with `batch` spans: 3 of 4 HTTP server, 1 of 4 SQL client."""
    rng = random.Random(seed)
    services = [beyla_resource(f"svc-{i}", pid=1000 + i) for i in range(4)]
    base = time.time_ns()
    requests = []
    for index in range(count):
        spans: list[Span] = []
        while len(spans) < batch:
            trace_id, server_id = os.urandom(16), os.urandom(8)
            method, route, path = rng.choice(ROUTES)
            start = base + index * 1_000_000 + len(spans)
            spans.append(
                http_server_span(
                    trace_id,
                    server_id,
                    start_ns=start,
                    duration_ns=rng.randint(200_000, 400_000_000),
                    method=method,
                    route=route,
                    path=path + str(rng.randint(1, 500)) if route.endswith("}") else path,
                    status=rng.choice((200, 200, 200, 201, 404, 500)),
                )
            )
            if len(spans) % 4 == 3:
                spans.append(
                    sql_client_span(trace_id, os.urandom(8), server_id, start_ns=start + 1000, duration_ns=2_000_000)
                )
        requests.append(trace_request(services[index % len(services)], spans[:batch]).SerializeToString())
    return requests


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def trace_id_offsets(payload: bytes) -> list[int]:
    """Where each span's trace id sits in the serialized request (random ids: no false matches)."""
    request = ExportTraceServiceRequest.FromString(payload)
    offsets = []
    for trace_id in {span.trace_id for span in request.resource_spans[0].scope_spans[0].spans}:
        start = payload.find(trace_id)
        while start != -1:
            offsets.append(start)
            start = payload.find(trace_id, start + 1)
    return offsets


def with_new_trace_ids(payload: bytes, offsets: list[int], cycle: int) -> bytes:
    """The same request with the first 4 bytes of every trace id replaced: all spans are new."""
    marker = cycle.to_bytes(4, "big")
    data = bytearray(payload)
    for offset in offsets:
        data[offset : offset + 4] = marker
    return bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--path", choices=("decoded", "serialized"), default="decoded")
    args = parser.parse_args()
    payloads = make_requests(400, args.batch)
    offsets = [trace_id_offsets(payload) for payload in payloads]
    with tempfile.TemporaryDirectory(prefix="coral-bench-") as state_dir:
        config = parse_config_text(f"state_dir: {state_dir}\n")
        storage = Storage(config.storage)
        storage.start()
        processor = TransformProcessor(storage, agent_id="bench")
        processor.start()
        sent = refused = 0
        cpu_started = _cpu_seconds()
        started = time.perf_counter()
        deadline = started + args.seconds
        index = 0
        while time.perf_counter() < deadline:
            payload = payloads[index % len(payloads)]
            cycle = index // len(payloads)
            if cycle:
                # Re-sending a payload would only exercise deduplication: new trace ids each cycle.
                payload = with_new_trace_ids(payload, offsets[index % len(payloads)], cycle)
            try:
                if args.path == "serialized":
                    processor.consume_traces_serialized(payload)
                else:
                    processor.consume_traces(ExportTraceServiceRequest.FromString(payload))
                sent += args.batch
                index += 1
            except QueueFullError as exc:
                refused += 1
                time.sleep(min(exc.retry_after, 0.01))
        accepted_at = time.perf_counter()
        storage.flush(timeout=120)
        finished = time.perf_counter()
        cpu_used = _cpu_seconds() - cpu_started
        stored = storage.reader().execute("SELECT count(*) FROM otel_spans").fetchone()
        status = storage.status()
        storage.stop(30)
    stored_count = int(stored[0]) if stored else 0
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"accepted {sent} spans in {accepted_at - started:.2f}s ({sent / (accepted_at - started):,.0f} spans/s)")
    print(f"stored {stored_count} spans; flush took {finished - accepted_at:.2f}s; queue-full refusals {refused}")
    print(f"rows lost {status['rows_lost']}, write errors {status['write_errors']}, db {status['db_size_bytes']} B")
    wall = finished - started
    print(f"CPU {cpu_used:.1f}s over {wall:.1f}s wall: {stored_count / cpu_used:,.0f} spans per CPU-second")
    print(f"peak RSS {peak_rss_mib:.0f} MiB (indicative: 2 shared cores)")
    print(f"transform+store: {stored_count / (finished - started):.0f} spans/s")


if __name__ == "__main__":
    main()
