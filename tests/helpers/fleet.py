"""Agents with the pull API, fed by real OTLP senders (the OpenTelemetry SDK), for the colony tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from coral_ebpf.pullapi._generated import agent_pb2 as pb
from coral_ebpf.pullapi._generated import agent_pb2_grpc as pb_grpc
from tests.helpers import beyla_otlp
from tests.helpers.agent_process import AgentProcess
from tests.helpers.processes import free_port

BOUNDS = beyla_otlp.BEYLA_DURATION_BUCKETS
# Fast-starting agents: no discovery, no RED engine of their own (the data comes over OTLP).
QUIET = {
    "storage": {"flush_interval": "100ms"},
    "discovery": {"enabled": False},
    "beyla": {"enabled": True},
    "red": {"engine": "beyla"},
    "colony_api": {"endpoint": "127.0.0.1:0"},
}


def pull_agent(root: Path, agent_id: str, settings: Mapping[str, Any] | None = None) -> AgentProcess:
    from tests.helpers.agent_process import merge

    return AgentProcess(root, merge(merge(QUIET, {"agent_id": agent_id}), settings or {}))


def pull_address(agent: AgentProcess) -> str:
    return str(agent.status()["colony_api"]["address"])


def send_http(agent: AgentProcess, service: str, requests: Mapping[tuple[str, str, int], tuple[int, float]]) -> int:
    """Record `requests` ((method, route, status) -> (count, seconds)) with the SDK, export once over
    OTLP/gRPC as deltas; the number of requests sent."""
    proto = beyla_otlp.beyla_resource(service, pid=4242)
    resource = Resource(
        {kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value") for kv in proto.attributes}
    )
    exporter = OTLPMetricExporter(
        endpoint=agent.grpc_address(),
        insecure=True,
        timeout=20,
        preferred_temporality={Histogram: AggregationTemporality.DELTA},
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    view = View(instrument_type=Histogram, aggregation=ExplicitBucketHistogramAggregation(BOUNDS))
    provider = MeterProvider(resource=resource, metric_readers=[reader], views=[view])
    histogram = provider.get_meter("github.com/grafana/beyla/v3").create_histogram(
        "http.server.request.duration", unit="s"
    )
    total = 0
    for (method, route, status), (count, seconds) in requests.items():
        attributes = beyla_otlp.http_server_attributes(proto, method, route, status)
        for _ in range(count):
            histogram.record(seconds, attributes)
        total += count
    assert provider.force_flush(30_000)
    provider.shutdown()
    return total


def send_spans(agent: AgentProcess, service: str, count: int, *, failed: int = 0) -> None:
    """`count` server spans, one trace each, exported over OTLP/gRPC; the first `failed` answer 500 (ERROR)."""
    from opentelemetry.trace import Status, StatusCode

    resource = Resource({"service.name": service, "process.pid": 4242, "telemetry.sdk.name": "beyla"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=agent.grpc_address(), insecure=True)))
    tracer = provider.get_tracer("github.com/grafana/beyla/v3")
    for index in range(count):
        with tracer.start_as_current_span(f"GET /item/{index % 3}", kind=SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", "GET")
            span.set_attribute("http.response.status_code", 500 if index < failed else 200)
            if index < failed:
                span.set_status(Status(StatusCode.ERROR, "internal error"))
    provider.shutdown()


def query(address: str, request: pb.QueryEbpfMetricsRequest, **call: Any) -> pb.QueryEbpfMetricsResponse:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AgentServiceStub(channel)
        response: pb.QueryEbpfMetricsResponse = stub.QueryEbpfMetrics(request, timeout=20, **call)
        return response


class ColonyProcess:
    """`coral-ebpf colony start` as a subprocess with its own config, state dir and socket."""

    def __init__(self, root: Path, settings: Mapping[str, Any]) -> None:
        import yaml

        from tests.helpers.agent_process import merge

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "colony.yaml"
        self.socket = root / "run" / "colony.sock"
        self.log_path = root / "colony.log"
        base = {
            "state_dir": str(root / "state"),
            "control_socket": str(self.socket),
            "poll": {"interval": "500ms", "timeout": "5s"},
            "telemetry": {"endpoint": "127.0.0.1:0"},  # never the default port: tests run side by side
        }
        self.document = merge(base, settings)
        self.config_path.write_text(yaml.safe_dump(self.document, sort_keys=False), encoding="utf-8")
        self.process: Any = None

    def start(self, timeout: float = 60) -> None:
        import subprocess
        import time

        from tests.helpers.agent_process import CLI, REPO

        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*CLI, "colony", "start", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the colony exited ({self.process.returncode})\n{self.log_tail()}")
            try:
                self.status()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the colony did not answer\n{self.log_tail()}") from None
                time.sleep(0.2)

    def status(self) -> dict[str, Any]:
        from coral_ebpf.agent.control_client import ControlClient

        document: dict[str, Any] = ControlClient(self.socket, timeout=30).status()
        return document

    def agent(self, agent_id: str) -> dict[str, Any]:
        return next((a for a in self.status()["agents"] if a["agent_id"] == agent_id), {})

    def wait_for(self, predicate: Any, timeout: float = 60, what: str = "") -> dict[str, Any]:
        import time

        deadline = time.monotonic() + timeout
        while True:
            document = self.status()
            if predicate(document):
                return document
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {document}\n{self.log_tail()}")
            time.sleep(0.2)

    def caught_up(self, expected_rows: Mapping[str, int] | None = None) -> dict[str, Any]:
        """Wait until every configured agent was polled, from now on, with no lag left."""
        import time

        since = time.time()

        def done(document: dict[str, Any]) -> bool:
            agents = {a["agent_id"]: a for a in document["agents"]}
            configured = document["colony"]["agents_configured"]
            if not all(
                agents.get(i, {}).get("lag_rows") == 0
                and not agents[i]["last_error"]
                and (agents[i]["last_success"] or 0) >= since
                for i in configured
            ):
                return False
            return expected_rows is None or all(
                agents.get(i, {}).get("rows_stored") == n for i, n in expected_rows.items()
            )

        return self.wait_for(done, what="every agent caught up")

    def query(self, *args: str) -> Any:
        import json

        from tests.helpers.agent_process import run_cli

        result = run_cli("query", *args, "--colony", str(self.config_path), "--json", "--since", "1h")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def kill(self) -> None:
        import signal

        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> int:
        import signal

        if self.process is None or self.process.poll() is not None:
            return int(self.process.returncode) if self.process is not None else 0
        self.process.send_signal(signal.SIGTERM)
        code = int(self.process.wait(60))
        assert code == 0, f"the colony exited with {code}\n{self.log_tail()}"
        return code

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "--- colony log ---\n" + "\n".join(text.splitlines()[-lines:])


# Two agents behind one colony, with known data: what the MCP and web-view tests of a colony check.
TWO_AGENTS = ("alpha", "beta")
TWO_AGENTS_SENT = {
    "alpha": {"shop": {("GET", "/a", 200): (50, 0.02), ("GET", "/a", 500): (5, 0.3)}},
    "beta": {"shop": {("GET", "/a", 200): (20, 0.2)}, "cart": {("POST", "/b", 201): (7, 3.0)}},
}
TWO_AGENTS_SPANS = {"alpha": (3, 1), "beta": (2, 0)}  # (spans of shop, of which failed)


class TwoAgentFleet:
    """`TWO_AGENTS` started, fed `TWO_AGENTS_SENT` and `TWO_AGENTS_SPANS`, and a colony caught up with them."""

    def __init__(self, root: Path, colony_settings: Mapping[str, Any] | None = None) -> None:
        from tests.helpers.agent_process import merge

        ports = {name: free_port() for name in TWO_AGENTS}
        self.agents = {
            name: pull_agent(root / name, name, {"colony_api": {"endpoint": f"127.0.0.1:{ports[name]}"}})
            for name in TWO_AGENTS
        }
        agents = {"agents": [{"id": n, "address": f"127.0.0.1:{ports[n]}"} for n in TWO_AGENTS]}
        self.colony = ColonyProcess(root / "colony", merge(agents, colony_settings or {}))

    def start(self) -> None:
        for agent in self.agents.values():
            agent.start(timeout=120)
        self.colony.start()
        for name, agent in self.agents.items():
            for service, mix in TWO_AGENTS_SENT[name].items():
                send_http(agent, service, mix)
            spans, failed = TWO_AGENTS_SPANS[name]
            send_spans(agent, "shop", spans, failed=failed)
        for name, agent in self.agents.items():
            requests = sum(count for mix in TWO_AGENTS_SENT[name].values() for count, _ in mix.values())
            _until_stored(agent, requests, TWO_AGENTS_SPANS[name][0])
        self.colony.caught_up()

    def stop(self) -> None:
        self.colony.stop()
        for agent in self.agents.values():
            agent.stop()

    def kill(self) -> None:
        self.colony.kill()
        for agent in self.agents.values():
            agent.kill()

    @contextlib.contextmanager
    def running(self) -> Iterator[TwoAgentFleet]:
        """Started and fed for the `with` block; stopped after it, killed whatever happens."""
        try:
            self.start()
            yield self
            self.stop()
        finally:
            self.kill()

    def log_tails(self) -> str:
        return "\n".join([self.colony.log_tail(80), *(agent.log_tail(30) for agent in self.agents.values())])


def _until_stored(agent: AgentProcess, requests: int, traces: int) -> None:
    """Until the agent stored the requests and traces sent to it (the colony then copies them)."""
    from tests.helpers.timing import eventually

    eventually(
        lambda: sum(r["requests"] for r in agent.cli_json("query", "http", "--since", "1h")),
        30,
        f"{requests} requests stored",
        until=lambda n: n == requests,
    )
    eventually(
        lambda: len(agent.cli_json("query", "traces", "--since", "1h")),
        30,
        f"{traces} traces stored",
        until=lambda n: n == traces,
    )
