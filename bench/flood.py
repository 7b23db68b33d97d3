"""A 60 s overload of the agent: many senders over gRPC and OTLP/HTTP, as fast as they can.

    .venv/bin/python bench/flood.py [--seconds 60] [--grpc-senders 12] [--http-senders 6] [--memory 256MiB]

A fresh `coral-ebpf start` (loopback, temp state dir, Beyla and discovery off, `limits.memory`
as given) receives 512-span Beyla-shaped batches from every sender back to back (refused calls
are retried after a short pause, like an SDK would, only sooner). The agent's memory is sampled
every 0.2 s from /proc. Prints idle RSS, the peak RSS sampled during the flood (and its private,
anonymous part, which is what `limits.memory` bounds; the rest is library code), VmHWM (which also
holds the BPF compile at start), acknowledged spans and refusals, and last:

    flood: peak RSS <MiB> MiB (private <MiB> MiB, limits.memory <MiB> MiB), idle RSS <MiB> MiB, <n> refusals
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import EXPORT, BatchTemplate, wait_for_grpc  # noqa: E402
from coral_ebpf.agent.control_client import ControlClient  # noqa: E402
from coral_ebpf.units import parse_size  # noqa: E402
from tests.helpers.processes import free_port  # noqa: E402

MiB = 1024 * 1024


def memory_of(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def started(socket_path: Path) -> bool:
    """The agent's start is complete: it has measured its idle footprint (status agent.memory)."""
    if not socket_path.exists():
        return False
    try:
        memory = ControlClient(socket_path, timeout=10).status()["agent"].get("memory") or {}
    except Exception:  # still starting: any failure means "not yet"
        return False
    return memory.get("idle_rss_bytes") is not None


class Flood:
    def __init__(self, grpc_address: str, http_address: str) -> None:
        self.grpc_address, self.http_address = grpc_address, http_address
        self.template = BatchTemplate()
        self.numbers = itertools.count(1)
        self.outcomes: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def _body(self) -> bytes:
        buffer = bytearray(self.template.payload)
        self.template.patch(buffer, next(self.numbers))
        return bytes(buffer)

    def _count(self, outcome: str) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
        if outcome != "ok":
            time.sleep(0.05)

    def grpc_sender(self) -> None:
        channel = grpc.insecure_channel(self.grpc_address)
        export = channel.unary_unary(EXPORT)
        while not self.stop.is_set():
            try:
                export(self._body(), timeout=30)
                self._count("ok")
            except grpc.RpcError as exc:
                self._count(f"grpc {exc.code().name}")
        channel.close()

    def http_sender(self) -> None:
        host, _, port = self.http_address.rpartition(":")
        while not self.stop.is_set():
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            try:
                connection.request(
                    "POST", "/v1/traces", body=self._body(), headers={"Content-Type": "application/x-protobuf"}
                )
                response = connection.getresponse()
                response.read()
                self._count("ok" if response.status == 200 else f"http {response.status}")
            except OSError as exc:
                self._count(f"http {type(exc).__name__}")
            finally:
                connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--grpc-senders", type=int, default=12)
    parser.add_argument("--http-senders", type=int, default=6)
    parser.add_argument("--memory", default="256MiB", help="limits.memory for the agent (default 256MiB)")
    args = parser.parse_args()
    executable = Path(sys.executable).parent / "coral-ebpf"
    workdir = Path(tempfile.mkdtemp(prefix="coral-flood-"))
    port, http_port = free_port(), free_port()
    config = workdir / "config.yaml"
    socket_path = workdir / "control.sock"
    config.write_text(
        json.dumps(
            {
                "state_dir": str(workdir / "state"),
                "log_level": "warning",
                "otlp": {"grpc_endpoint": f"127.0.0.1:{port}", "http_endpoint": f"127.0.0.1:{http_port}"},
                "control": {"socket": str(socket_path)},
                "beyla": {"enabled": False},
                "discovery": {"enabled": False},
                "limits": {"memory": args.memory},
            }
        )
    )
    log_path = workdir / "agent.log"
    with log_path.open("wb") as log:
        agent = subprocess.Popen([str(executable), "start", "--config", str(config)], stdout=log, stderr=log)
    peak_anon = peak_rss = 0
    try:
        if not wait_for_grpc(f"127.0.0.1:{port}", agent, 120):
            print(log_path.read_text(errors="replace")[-2000:])
            print("flood: the agent did not start")
            return 1
        deadline = time.monotonic() + 120
        while not started(socket_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # settled: every part runs (the agent has measured its idle footprint)
        idle = memory_of(agent.pid)
        flood = Flood(f"127.0.0.1:{port}", f"127.0.0.1:{http_port}")
        threads = [threading.Thread(target=flood.grpc_sender, daemon=True) for _ in range(args.grpc_senders)]
        threads += [threading.Thread(target=flood.http_sender, daemon=True) for _ in range(args.http_senders)]
        for thread in threads:
            thread.start()
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            sample = memory_of(agent.pid)
            peak_anon = max(peak_anon, sample.get("RssAnon", 0))
            peak_rss = max(peak_rss, sample.get("VmRSS", 0))
            time.sleep(0.2)
        status = ControlClient(socket_path, timeout=30).status()
        flood.stop.set()
        for thread in threads:
            thread.join(60)
        final = memory_of(agent.pid)
        agent.send_signal(signal.SIGTERM)
        agent.wait(300)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    memory = status["agent"].get("memory", {})
    refusals = sum(count for outcome, count in flood.outcomes.items() if outcome != "ok")
    print(
        f"senders: {args.grpc_senders} gRPC + {args.http_senders} OTLP/HTTP for {args.seconds:.0f} s; "
        f"cpus {os.cpu_count()}"
    )
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"outcomes: {dict(flood.outcomes)}")
    print(f"acknowledged: {flood.outcomes['ok'] * flood.template.spans} spans")
    print(f"agent memory status: {json.dumps({k: v for k, v in memory.items() if k != 'last_refusal'})}")
    print(f"last memory refusal: {memory.get('last_refusal') or 'none'}")
    limit = parse_size(args.memory)
    print(f"idle: RSS {idle['VmRSS'] / MiB:.0f} MiB (private {idle['RssAnon'] / MiB:.0f} MiB)")
    print(f"VmHWM over the agent's life (includes the BPF compile at start): {final['VmHWM'] / MiB:.0f} MiB")
    print(
        f"flood: peak RSS {peak_rss / MiB:.0f} MiB (private {peak_anon / MiB:.0f} MiB, limits.memory "
        f"{limit / MiB:.0f} MiB), idle RSS {idle['VmRSS'] / MiB:.0f} MiB, {refusals} refusals"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
