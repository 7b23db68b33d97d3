"""Support for RED engine tests: server processes, a consumer that keeps what it gets, record readers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from coral_ebpf.discovery.model import Listener, ServiceEntry
from coral_ebpf.storage.exponential import ExpBuckets
from tests.helpers.consumertest import Sink
from tests.helpers.processes import port_printing_child
from tests.helpers.timing import eventually, quiet_period

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    port: int
    kind: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def entry(self, name: str | None = None) -> ServiceEntry:
        return ServiceEntry(
            pid=self.pid,
            netns=os.stat(f"/proc/{self.pid}/ns/net").st_ino,
            name=name or f"{self.kind}-app",
            exe=os.readlink(f"/proc/{self.pid}/exe"),
            cmdline=tuple(self.process.args) if isinstance(self.process.args, list) else (),
            listeners=(Listener(port=self.port, address="127.0.0.1"),),
            start_time=0.0,
        )


@contextlib.contextmanager
def server(kind: str, service_name: str | None = None) -> Iterator[ServerProcess]:
    """A server from tests/helpers/red_apps.py, stopped at the end of the block.

    `service_name` goes in OTEL_SERVICE_NAME, where discovery (and Beyla) read the service's name.
    """
    env = None if service_name is None else {**os.environ, "OTEL_SERVICE_NAME": service_name}
    args = [sys.executable, "-m", "tests.helpers.red_apps", kind]
    with port_printing_child(args, cwd=REPO, env=env, grace=5, what=f"{kind} server") as (process, port):
        yield ServerProcess(process, port, kind)


def value(any_value: AnyValue) -> Any:
    return getattr(any_value, any_value.WhichOneof("value") or "string_value")


def attrs(key_values: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in key_values}


@dataclass
class Point:
    resource: dict[str, Any]
    attributes: dict[str, Any]
    count: int
    total: float
    exponential: ExpBuckets  # the engine exports exponential histograms only
    temporality: int


def points(consumer: Sink, pid: int | None = None) -> list[Point]:
    found = []
    for request in list(consumer.metrics):
        for resource_metrics in request.resource_metrics:
            resource = attrs(resource_metrics.resource.attributes)
            if pid is not None and resource.get("process.pid") != pid:
                continue
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.exponential_histogram.data_points:
                        buckets = ExpBuckets(
                            point.scale,
                            point.zero_count,
                            point.zero_threshold,
                            point.positive.offset,
                            tuple(point.positive.bucket_counts),
                            point.negative.offset,
                            tuple(point.negative.bucket_counts),
                        )
                        found.append(
                            Point(
                                resource,
                                attrs(point.attributes),
                                point.count,
                                point.sum,
                                buckets,
                                metric.exponential_histogram.aggregation_temporality,
                            )
                        )
    return found


def spans(consumer: Sink, pid: int | None = None) -> list[tuple[dict[str, Any], Any]]:
    found: list[tuple[dict[str, Any], Any]] = []
    for request in list(consumer.traces):
        for resource_spans in request.resource_spans:
            resource = attrs(resource_spans.resource.attributes)
            if pid is not None and resource.get("process.pid") != pid:
                continue
            for scope in resource_spans.scope_spans:
                found.extend((resource, span) for span in scope.spans)
    return found


def counts(consumer: Sink, pid: int) -> Counter[tuple[str, str, int]]:
    """(method, route, status) -> requests, summed over every export."""
    total: Counter[tuple[str, str, int]] = Counter()
    for point in points(consumer, pid):
        a = point.attributes
        total[(a["http.request.method"], a["http.route"], a["http.response.status_code"])] += point.count
    return total


def wait_for(
    flush: Callable[[], None], consumer: Sink, pid: int, expected: int, timeout: float = 10.0
) -> Counter[tuple[str, str, int]]:
    """Flush until `expected` requests of `pid` were exported, then once more to catch any extra."""

    def exported() -> Counter[tuple[str, str, int]]:
        flush()
        return counts(consumer, pid)

    eventually(
        exported,
        timeout,
        f"{expected} requests of pid {pid} exported",
        until=lambda got: sum(got.values()) >= expected,
        interval=0.1,
    )
    quiet_period(0.3)  # a request counted twice would be exported by now
    flush()
    return counts(consumer, pid)
