"""OTLP export upstream: spans/s a fresh `coral-ebpf start` forwards while it ingests.

    .venv/bin/python bench/export.py [--seconds 10] [--senders 4] [--no-queue-fsync]

The agent stores what it receives (as in `bench/ingest.py`, same Beyla-shaped batches of 512
spans over gRPC) and exports it through its disk queue to an upstream OTLP/gRPC receiver (this
project's receiver in this process, with a consumer that counts spans). The figure is the
acknowledged spans divided by the time from the first send until the upstream has counted all
of them: what the export path sustains end to end. Discovery and Beyla are off so nothing else
produces spans. The queue syncs each request before it is acknowledged (group commit, the default);
`--no-queue-fsync` measures `export.otlp.queue_fsync: false` for comparison.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.ingest import STARTUP_TIMEOUT, send_for, wait_for_grpc
from coral_ebpf.consumer import ConsumeResult
from coral_ebpf.otlp.receiver import OtlpReceiver
from coral_ebpf.otlp.settings import OtlpSettings
from tests.helpers.processes import free_port


class CountingConsumer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans = 0
        self.last = 0.0

    def consume_traces(self, request: ExportTraceServiceRequest) -> ConsumeResult:
        count = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        with self.lock:
            self.spans += count
            self.last = time.monotonic()
        return ConsumeResult()

    def consume_metrics(self, request: ExportMetricsServiceRequest) -> ConsumeResult:
        return ConsumeResult()

    def consume_logs(self, request: ExportLogsServiceRequest) -> ConsumeResult:
        return ConsumeResult()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--no-queue-fsync", dest="queue_fsync", action="store_false")
    args = parser.parse_args()
    counter = CountingConsumer()
    upstream = OtlpReceiver(OtlpSettings(grpc_endpoint="127.0.0.1:0", http_endpoint=None), counter)
    upstream.start()
    executable = Path(sys.executable).parent / "coral-ebpf"
    with tempfile.TemporaryDirectory(prefix="coral-export-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        config = workdir / "config.yaml"
        config.write_text(
            json.dumps(
                {
                    "state_dir": str(workdir / "state"),
                    "log_level": "warning",
                    "otlp": {"grpc_endpoint": f"127.0.0.1:{port}", "http_endpoint": ""},
                    "control": {"socket": str(workdir / "control.sock")},
                    "telemetry": {"endpoint": ""},
                    "discovery": {"enabled": False},
                    "beyla": {"enabled": False},
                    "red": {"engine": "bcc"},
                    "export": {
                        "otlp": {
                            "endpoint": f"http://{upstream.grpc_address}",
                            "protocol": "grpc",
                            "queue_fsync": args.queue_fsync,
                        }
                    },
                }
            )
        )
        log_path = workdir / "agent.log"
        with log_path.open("wb") as log:
            agent = subprocess.Popen([str(executable), "start", "--config", str(config)], stdout=log, stderr=log)
        try:
            if not wait_for_grpc(f"127.0.0.1:{port}", agent, STARTUP_TIMEOUT):
                print(f"the agent did not start: {log_path.read_text(errors='replace')[-500:]}")
                return 1
            sent = send_for(f"127.0.0.1:{port}", args.seconds, args.senders)
            deadline = time.monotonic() + 300
            while counter.spans < sent.acknowledged_spans and time.monotonic() < deadline:
                time.sleep(0.1)
            delivered, last = counter.spans, counter.last
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=120)
    upstream.stop(5)
    elapsed = last - sent.started
    print(f"sent for {args.seconds:.0f}s with {args.senders} senders: {sent.acknowledged_spans} spans acknowledged")
    print(f"ingest side: {sent.acknowledged_spans / (sent.finished - sent.started):.0f} spans/s acknowledged")
    print(f"upstream received {delivered} spans, the last {elapsed:.1f}s after the first send")
    if delivered < sent.acknowledged_spans:
        print(f"WARNING: {sent.acknowledged_spans - delivered} acknowledged spans did not reach the upstream")
    print(f"queue_fsync: {args.queue_fsync}")
    print(f"export: {delivered / elapsed:.0f} spans/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
