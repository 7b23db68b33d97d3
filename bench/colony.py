"""Colony ingest: N simulated agents' pull APIs polled into one colony DuckDB.

    .venv/bin/python bench/colony.py [--agents 100] [--cycles 4] [--http 300] [--spans 300] [--concurrency 8]

Each simulated agent is an in-process gRPC server (loopback, its own port) answering
QueryEbpfMetrics from what it "produced" since the caller's start seq ids. Per cycle every agent
produces `--http` HTTP metric rows (a host with 50 route/status series exporting every 5 s
makes 300 per 30 s poll interval) and `--spans` spans (10 spans/s), each row a real message of
the pull API (a 16-bucket histogram, attributes). The servers answer from pre-serialised row
bytes (each with its seq_id appended) so that the figure is the colony's work: gRPC receive,
decode, Arrow, DuckDB insert with the dedupe key, checkpoints.

Prints per cycle the poll cycle time and rows stored, then the colony's rows/s (rows stored /
summed cycle time) and its RSS (this process: the servers' share is small, see above).
Last line: `colony: <rows/s> rows/s over <N> agents`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coral_ebpf.colony.poller import Poller  # noqa: E402
from coral_ebpf.colony.settings import AgentTarget, ColonyConfig, PollSettings  # noqa: E402
from coral_ebpf.colony.store import ColonyStore  # noqa: E402
from coral_ebpf.pullapi._generated import agent_pb2 as pb  # noqa: E402
from coral_ebpf.pullapi.convert import ENCODERS  # noqa: E402
from tests.helpers.pull_rows import http_row, span_row  # noqa: E402

BOUNDS_16 = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0]
SESSION = "bench-session"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


class RowTemplates:
    """Serialised rows; a row's seq_id is appended as one more field (the last value wins)."""

    def __init__(self, series: int) -> None:
        self.http = []
        for index in range(series):
            row = http_row(0, [index % 7 + 1] * (len(BOUNDS_16) + 1), route=f"/api/v1/items/{index}")
            row["bounds_s"] = BOUNDS_16
            message = ENCODERS["http"](row)
            message.ClearField("seq_id")
            self.http.append(message.SerializeToString())
        span = ENCODERS["traces"](span_row(0))
        span.ClearField("seq_id")
        self.span = span.SerializeToString()

    def response(self, kind: str, first: int, last: int) -> bytes:
        """The repeated field of `kind` with rows first..last (inclusive)."""
        out = bytearray()
        number, seq_field = (1, 10) if kind == "http" else (5, 11)
        for seq in range(first, last + 1):
            body = (
                (self.http[seq % len(self.http)] if kind == "http" else self.span) + _field(seq_field, 0) + _varint(seq)
            )
            out += _field(number, 2) + _varint(len(body)) + body
        return bytes(out)


class SimulatedAgent:
    def __init__(self, agent_id: str, templates: RowTemplates) -> None:
        self.agent_id = agent_id
        self.templates = templates
        self.produced = {"http": 0, "traces": 0}
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        handlers = {
            "QueryEbpfMetrics": grpc.unary_unary_rpc_method_handler(
                self._query, request_deserializer=pb.QueryEbpfMetricsRequest.FromString, response_serializer=None
            ),
            "GetAgentInfo": grpc.unary_unary_rpc_method_handler(
                self._info,
                request_deserializer=pb.GetAgentInfoRequest.FromString,
                response_serializer=pb.AgentInfo.SerializeToString,
            ),
        }
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("coral.agent.v1.AgentService", handlers)]
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def produce(self, http: int, spans: int) -> None:
        self.produced["http"] += http
        self.produced["traces"] += spans

    def _query(self, request: pb.QueryEbpfMetricsRequest, context: grpc.ServicerContext) -> bytes:
        limit = request.max_records or 10_000
        tail = pb.QueryEbpfMetricsResponse(
            session_id=SESSION, agent_id=self.agent_id, http_min_seq_id=1, traces_min_seq_id=1
        )
        body = bytearray()
        more = False
        for kind, start in (("http", request.http_start_seq_id), ("traces", request.traces_start_seq_id)):
            if kind == "traces" and not request.include_traces:
                continue
            last = min(self.produced[kind], start + limit)
            more = more or last < self.produced[kind]
            if last > start:
                body += self.templates.response(kind, start + 1, last)
            setattr(tail, f"{kind}_max_seq_id", max(last, start))
        tail.more = more
        return bytes(body) + tail.SerializeToString()

    def _info(self, request: pb.GetAgentInfoRequest, context: grpc.ServicerContext) -> pb.AgentInfo:
        info = pb.AgentInfo(agent_id=self.agent_id, session_id=SESSION)
        for kind, produced in self.produced.items():
            info.data.add(type=kind, min_seq_id=1, max_seq_id=produced, rows=produced)
        return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument("--http", type=int, default=300, help="HTTP rows per agent per cycle")
    parser.add_argument("--spans", type=int, default=300, help="spans per agent per cycle")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    templates = RowTemplates(50)
    agents = [SimulatedAgent(f"sim-{index:04d}", templates) for index in range(args.agents)]
    work = Path(tempfile.mkdtemp(prefix="colony-bench-"))
    try:
        config = ColonyConfig(
            source="bench",
            state_dir=work,
            database=work / "colony.duckdb",
            control_socket=work / "colony.sock",
            poll=PollSettings(concurrency=args.concurrency, timeout=30),
            agents=tuple(AgentTarget(a.agent_id, f"127.0.0.1:{a.port}") for a in agents),
        )
        poller = Poller(config, ColonyStore(config.database))
        total_rows = 0
        total_seconds = 0.0
        for cycle in range(1, args.cycles + 1):
            for agent in agents:
                agent.produce(args.http, args.spans)
            started = time.monotonic()
            results = poller.cycle()
            seconds = time.monotonic() - started
            rows = sum(r.rows for r in results)
            failed = [r for r in results if not r.ok]
            if failed:
                print(f"cycle {cycle}: {len(failed)} polls failed, e.g. {failed[0].error}")
                return 1
            total_rows += rows
            total_seconds += seconds
            print(
                f"cycle {cycle}: {len(results)} agents, {rows} rows stored in {seconds:.2f} s "
                f"({rows / seconds:,.0f} rows/s)"
            )
        expected = args.cycles * args.agents * (args.http + args.spans)
        stored = (
            poller.store.cursor()
            .execute("SELECT (SELECT count(*) FROM beyla_http_metrics) + (SELECT count(*) FROM otel_spans_raw)")
            .fetchone()
        )
        assert stored is not None and stored[0] == expected == total_rows, (stored, expected, total_rows)
        rss = psutil.Process().memory_info().rss
        size = sum(p.stat().st_size for p in work.iterdir() if p.name.startswith("colony.duckdb"))
        rate = total_rows / total_seconds
        print(
            f"rows per cycle: {args.agents * (args.http + args.spans)} ({args.http} HTTP + {args.spans} spans "
            f"per agent); poll concurrency {args.concurrency}"
        )
        print(
            f"mean poll cycle: {total_seconds / args.cycles:.2f} s; colony RSS {rss / 2**20:.0f} MiB; "
            f"database {size / 2**20:.1f} MiB for {total_rows} rows"
        )
        print(f"colony: {rate:,.0f} rows/s over {args.agents} agents")
        poller.close()
        poller.store.close()
    finally:
        for agent in agents:
            agent.server.stop(None)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
