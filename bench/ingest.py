"""OTLP/gRPC ingest: Beyla-shaped span batches of 512 for N seconds, counted once stored.

    .venv/bin/python bench/ingest.py [--seconds 10] [--target auto|agent|pipeline|receiver] [--senders 4]
                                     [--spool on|off] [--compare-spool [--rounds 2]]

Targets:
- `agent`: a fresh `coral-ebpf start --config <tmp>` (loopback, temp state dir, Beyla off). The
  figure counts spans **stored and queryable**: after sending, the agent is stopped (SIGTERM,
  which flushes what it acknowledged) and the spans are counted in its DuckDB file (`beyla_traces`);
  spans/s = stored spans / (first send .. agent exited).
- `pipeline`: the same parts in a subprocess without the CLI (OtlpReceiver -> TransformProcessor ->
  Storage on a temp DuckDB file), for builds that have the data store but not yet `start`. Also counts
  stored spans (after `Storage.flush`).
- `receiver`: the OTLP receiver alone in a subprocess, with a consumer that only counts: an upper
  bound for the receive path. Its last line says so.
- `auto` (default): the first of `agent`, `pipeline`, `receiver` that this build can run.

The agent runs with its write-ahead spool (every acknowledged batch fsynced first) unless
`--spool off`; `--compare-spool` alternates agents with the spool on and off and prints the
spool's cost as a ratio of stored spans/s.

The client is kept cheap so it does not steal the agent's CPU: one request is serialised once,
and each send only patches the batch number into the trace and span ids of a private copy,
then sends the bytes through a raw-bytes gRPC call. Peak RSS is the agent's VmHWM.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from tests.helpers import beyla_otlp, beyla_payloads  # noqa: E402
from tests.helpers.processes import free_port  # noqa: E402

BATCH = 512
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SERVICE = "ingest-bench"
RETRYABLE = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}
STARTUP_TIMEOUT = 60.0


# --- the client ----------------------------------------------------------------------------


class BatchTemplate:
    """A serialised request of BATCH spans whose ids carry a batch number patched in place.

    Span i of batch b has trace id `b (8 bytes) | i (4) | 0xC0DE0000` and span id `b (4) | i (4)`,
    so every span of the run has unique ids.
    """

    TRACE_TAIL = b"\xc0\xde\x00\x00"

    def __init__(self, batch: int = BATCH) -> None:
        now_ns = time.time_ns()
        sentinel = b"\xee" * 8
        spans = [
            beyla_otlp.http_server_span(
                sentinel + struct.pack(">I", index) + self.TRACE_TAIL,
                sentinel[:4] + struct.pack(">I", index),
                start_ns=now_ns + index * 1000,
                duration_ns=2_000_000 + index * 1000,
                route="/users/{id}",
                path="/users/42",
            )
            for index in range(batch)
        ]
        request = beyla_otlp.trace_request(beyla_payloads.resource(service=SERVICE), spans)
        self.payload = request.SerializeToString()
        self.trace_offsets: list[int] = []
        self.span_offsets: list[int] = []
        for index in range(batch):
            trace_at = self.payload.find(sentinel + struct.pack(">I", index) + self.TRACE_TAIL)
            span_at = self.payload.find(b"\x12\x08" + sentinel[:4] + struct.pack(">I", index)) + 2
            assert trace_at > 0 and span_at > 2, "template ids not found"
            self.trace_offsets.append(trace_at)
            self.span_offsets.append(span_at)
        self.spans = batch

    def patch(self, buffer: bytearray, batch_number: int) -> None:
        for offset in self.trace_offsets:
            struct.pack_into(">Q", buffer, offset, batch_number)
        low = batch_number & 0xFFFFFFFF
        for offset in self.span_offsets:
            struct.pack_into(">I", buffer, offset, low)


@dataclass
class SendResult:
    acknowledged_spans: int
    refusals: int
    failures: dict[str, int]
    started: float
    finished: float


def send_for(address: str, seconds: float, senders: int) -> SendResult:
    template = BatchTemplate()
    numbers = itertools.count(1)
    lock = threading.Lock()
    acknowledged = [0]
    refusals = [0]
    failures: dict[str, int] = {}
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=30)
    export = channel.unary_unary(EXPORT)
    started = time.monotonic()
    deadline = started + seconds

    def sender() -> None:
        buffer = bytearray(template.payload)
        while time.monotonic() < deadline:
            template.patch(buffer, next(numbers))
            body = bytes(buffer)
            while True:
                try:
                    export(body, timeout=30)
                except grpc.RpcError as error:
                    code = error.code()
                    if code in RETRYABLE and time.monotonic() < deadline + 30:
                        with lock:
                            refusals[0] += 1
                        time.sleep(0.05)  # backpressure: the same batch again, as an exporter would
                        continue
                    with lock:
                        failures[code.name] = failures.get(code.name, 0) + 1
                    break
                with lock:
                    acknowledged[0] += template.spans
                break

    threads = [threading.Thread(target=sender, name=f"sender-{i}") for i in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finished = time.monotonic()
    channel.close()
    return SendResult(acknowledged[0], refusals[0], failures, started, finished)


# --- targets ------------------------------------------------------------------------------


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_grpc(address: str, process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with grpc.insecure_channel(address) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=1.0)
                return True
            except grpc.FutureTimeoutError:
                continue
    return False


def wait_until_running(executable: Path, config: Path, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for `status --json` to say the agent finished starting (`agent.state: running`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        answer = subprocess.run(
            [str(executable), "status", "--json", "--config", str(config)], capture_output=True, text=True, check=False
        )
        try:
            if json.loads(answer.stdout).get("agent", {}).get("state") == "running":
                return
        except json.JSONDecodeError:
            pass
        time.sleep(0.5)
    print(f"agent did not report running within {timeout:.0f} s; measuring anyway")


def run_agent(
    seconds: float, senders: int, workdir: Path, *, spool: bool = True, memory: str | None = None
) -> dict[str, object] | None:
    """Start `coral-ebpf start`; None when it does not come up (not built yet, or failing).

    `spool=False` sets `storage.spool_max_bytes: 0` (acknowledged batches only in memory); `memory`
    sets `limits.memory` (default: the agent's own default).
    """
    executable = Path(sys.executable).parent / "coral-ebpf"
    if not executable.exists():
        return None
    port = free_port()
    database = workdir / "coral-ebpf.duckdb"
    config = workdir / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "state_dir": str(workdir / "state"),
                "log_level": "warning",
                "otlp": {"grpc_endpoint": f"127.0.0.1:{port}", "http_endpoint": ""},
                "storage": {"path": str(database), **({} if spool else {"spool_max_bytes": 0})},
                "control": {"socket": str(workdir / "control.sock")},
                "beyla": {"enabled": False},
                **({"limits": {"memory": memory}} if memory else {}),
            }
        )
    )
    log_path = workdir / "agent.log"
    with log_path.open("wb") as log:
        agent = subprocess.Popen([str(executable), "start", "--config", str(config)], stdout=log, stderr=log)
    try:
        if not wait_for_grpc(f"127.0.0.1:{port}", agent, STARTUP_TIMEOUT):
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            print(f"agent did not serve OTLP/gRPC on 127.0.0.1:{port}: {' | '.join(tail) or 'no output'}")
            return None
        # The receiver answers before the BPF programs of discovery and the built-in engine are
        # compiled (clang takes a core for ~10 s on this machine): sending then would measure the
        # compiler, not ingest. The figure is the ingest rate of a started agent.
        wait_until_running(executable, config, agent, STARTUP_TIMEOUT)
        sent = send_for(f"127.0.0.1:{port}", seconds, senders)
        peak = peak_rss_mib(agent.pid)
        cpu = cpu_seconds(agent.pid)  # before the final flush: a slight undercount
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=300)
        stored_at = time.monotonic()
        peak = peak_rss_mib(agent.pid) or peak
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    import duckdb

    with duckdb.connect(str(database), read_only=True) as connection:
        row = connection.execute("SELECT count(*) FROM beyla_traces WHERE service_name = ?", [SERVICE]).fetchone()
    stored = int(row[0]) if row else 0
    return {
        "target": "agent",
        "spool": spool,
        "sent": sent,
        "stored_spans": stored,
        "elapsed_s": stored_at - sent.started,
        "peak_rss_mib": peak,
        "cpu_s": cpu,
        "exit_code": agent.returncode,
    }


def pipeline_available() -> bool:
    import importlib.util

    return all(
        importlib.util.find_spec(name) is not None
        for name in ("coral_ebpf.storage.writer", "coral_ebpf.transform.processor")
    )


def run_server(kind: str, seconds: float, senders: int, workdir: Path) -> dict[str, object]:
    """Run `--serve-<kind>` in a subprocess, send to it, and collect its report."""
    server = subprocess.Popen(
        [sys.executable, __file__, f"--serve-{kind}", str(workdir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        address = server.stdout.readline().decode().strip()
        if not address:
            raise SystemExit("receiver subprocess did not start")
        sent = send_for(address, seconds, senders)
        server.stdin.write(b"report\n")
        server.stdin.flush()
        report = json.loads(server.stdout.readline())
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    # The server reports (wall clock) when everything it acknowledged was stored.
    stored_at = time.monotonic() - (time.time() - report["stored_at_unix"])
    return {
        "target": kind,
        "sent": sent,
        "stored_spans": report["spans"],
        "elapsed_s": stored_at - sent.started,
        "peak_rss_mib": report["peak_rss_mib"],
        "cpu_s": report["cpu_s"],
        "exit_code": server.returncode,
    }


def _serve(receiver_consumer: object, finish: object) -> None:
    """Serve OTLP/gRPC on an ephemeral loopback port until told to report on stdin."""
    import resource

    from coral_ebpf.otlp.receiver import OtlpReceiver
    from coral_ebpf.otlp.settings import OtlpSettings

    receiver = OtlpReceiver(OtlpSettings(grpc_endpoint="127.0.0.1:0", http_endpoint=None), receiver_consumer)  # type: ignore[arg-type]
    receiver.start()
    print(receiver.grpc_address, flush=True)
    sys.stdin.readline()
    receiver.stop(5.0)
    spans = finish()  # type: ignore[operator]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "spans": spans,
        "stored_at_unix": time.time(),
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }
    print(json.dumps(report), flush=True)


def serve_pipeline(workdir: Path) -> None:
    """The `pipeline` target's server: receiver -> transform -> storage (DuckDB in `workdir`)."""
    from coral_ebpf.storage.settings import StorageSettings
    from coral_ebpf.storage.writer import Storage
    from coral_ebpf.transform.processor import TransformProcessor

    storage = Storage(StorageSettings(path=workdir / "coral-ebpf.duckdb"))
    storage.start()
    processor = TransformProcessor(storage, agent_id="ingest-bench")
    processor.start()

    def finish() -> int:
        processor.stop(5.0)
        storage.flush(120.0)
        with storage.reader() as reader:
            row = reader.execute("SELECT count(*) FROM beyla_traces WHERE service_name = ?", [SERVICE]).fetchone()
        storage.stop(30.0)
        return int(row[0]) if row else 0

    _serve(processor, finish)


def serve_receiver(workdir: Path) -> None:
    """The `receiver` target's server: a consumer that only counts spans."""
    from tests.helpers.consumertest import CountingSink

    consumer = CountingSink()
    _serve(consumer, lambda: consumer.spans)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to send (default 10)")
    parser.add_argument("--target", choices=("auto", "agent", "pipeline", "receiver"), default="auto")
    parser.add_argument("--senders", type=int, default=4, help="concurrent client calls (default 4)")
    parser.add_argument(
        "--spool", choices=("on", "off"), default="on", help="agent target: the write-ahead spool (default on)"
    )
    parser.add_argument(
        "--compare-spool",
        action="store_true",
        help="agent target: alternate runs with the spool on and off (--rounds each) and print the cost ratio",
    )
    parser.add_argument("--memory", help="agent target: limits.memory for the agent (default: its default)")
    parser.add_argument("--rounds", type=int, default=2, help="with --compare-spool: runs per setting (default 2)")
    parser.add_argument("--serve-receiver", metavar="DIR", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve-pipeline", metavar="DIR", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver:
        serve_receiver(args.serve_receiver)
        return 0
    if args.serve_pipeline:
        serve_pipeline(args.serve_pipeline)
        return 0

    if args.compare_spool:
        return compare_spool(args.seconds, args.senders, args.rounds, args.memory)
    workdir = Path(tempfile.mkdtemp(prefix="coral-ingest-bench-"))
    try:
        result = None
        if args.target in ("auto", "agent"):
            result = run_agent(args.seconds, args.senders, workdir, spool=args.spool == "on", memory=args.memory)
            if result is None and args.target == "agent":
                print("ingest: agent target unavailable (see above)")
                return 1
        if result is None and args.target in ("auto", "pipeline"):
            if pipeline_available():
                print("measuring receiver -> transform -> storage in a subprocess, without the CLI")
                result = run_server("pipeline", args.seconds, args.senders, workdir)
            elif args.target == "pipeline":
                print("ingest: this build has no coral_ebpf.storage.writer / coral_ebpf.transform.processor")
                return 1
        if result is None:
            print("no data store in this build: measuring the receiver alone")
            result = run_server("receiver", args.seconds, args.senders, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    sent: SendResult = result["sent"]  # type: ignore[assignment]
    stored = int(result["stored_spans"])  # type: ignore[call-overload]
    elapsed = float(result["elapsed_s"])  # type: ignore[arg-type]
    sending = sent.finished - sent.started
    spool = f"  spool: {'on' if result['spool'] else 'off'}" if "spool" in result else ""
    print(f"target: {result['target']}{spool}  senders: {args.senders}  batch: {BATCH} spans  cpus: {os.cpu_count()}")
    print(f"load average before/now: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(
        f"acknowledged: {sent.acknowledged_spans} spans in {sending:.1f}s ({sent.acknowledged_spans / sending:,.0f}/s)"
    )
    print(f"retried after backpressure: {sent.refusals} calls; failed: {sent.failures or 'none'}")
    print(f"peak RSS of the {result['target']}: {result['peak_rss_mib']:.0f} MiB")
    cpu = result.get("cpu_s")
    if isinstance(cpu, float) and cpu > 0:
        # Less sensitive than wall-clock figures to other jobs sharing the cores.
        print(f"CPU used by the {result['target']}: {cpu:.1f}s ({stored / cpu:,.0f} spans per CPU-second)")
    rate = stored / elapsed if elapsed > 0 else 0.0
    if result["target"] in ("agent", "pipeline"):
        lost = sent.acknowledged_spans - stored
        print(f"stored and queryable: {stored} spans in {elapsed:.1f}s (first send .. all acknowledged spans stored)")
        if lost:
            print(f"WARNING: {lost} acknowledged spans are not in the database")
        print(f"ingest: {rate:.0f} spans/s")
    else:
        print(f"received by a counting consumer: {stored} spans (the receiver alone: nothing is stored)")
        print(f"ingest: {rate:.0f} spans/s received (receiver only, not stored)")
    return 0


def compare_spool(seconds: float, senders: int, rounds: int, memory: str | None = None) -> int:
    """Agent runs alternating spool on / off; the cost of the spool as a throughput ratio."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    per_cpu: dict[bool, list[float]] = {True: [], False: []}
    for round_number in range(1, rounds + 1):
        for spool in (True, False):
            workdir = Path(tempfile.mkdtemp(prefix="coral-ingest-bench-"))
            try:
                result = run_agent(seconds, senders, workdir, spool=spool, memory=memory)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            if result is None:
                print("ingest: agent target unavailable (see above)")
                return 1
            elapsed = float(result["elapsed_s"])  # type: ignore[arg-type]
            rate = int(result["stored_spans"]) / elapsed if elapsed > 0 else 0.0  # type: ignore[call-overload]
            rates[spool].append(rate)
            cpu = result.get("cpu_s")
            efficiency = int(result["stored_spans"]) / cpu if isinstance(cpu, float) and cpu > 0 else 0.0  # type: ignore[call-overload]
            per_cpu[spool].append(efficiency)
            print(
                f"round {round_number} spool {'on ' if spool else 'off'}: {rate:,.0f} spans/s stored, "
                f"{efficiency:,.0f} spans per agent CPU-second "
                f"(load average {os.getloadavg()[0]:.2f})",
                flush=True,
            )
    with_spool = sum(rates[True]) / len(rates[True])
    without = sum(rates[False]) / len(rates[False])
    ratio = with_spool / without if without else 0.0
    print(f"mean: spool on {with_spool:,.0f} spans/s, spool off {without:,.0f} spans/s")
    cpu_on, cpu_off = (sum(per_cpu[k]) / len(per_cpu[k]) for k in (True, False))
    if cpu_on and cpu_off:
        # Less sensitive to other jobs on a shared machine than the wall-clock rate.
        print(f"CPU cost: {(1 - cpu_on / cpu_off) * 100:.1f} % more agent CPU per span with the spool")
    print(f"spool cost: {(1 - ratio) * 100:.1f} % of throughput (on/off ratio {ratio:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
