"""Issue 12: what the agent acknowledged survives SIGKILL, a damaged spool tail and a full disk.

Real agents (`coral-ebpf start`), real senders over gRPC and OTLP/HTTP (tests/helpers/ack_load.py),
the real DuckDB file compared with exactly what was acknowledged. Kill points between the spool
write and the DuckDB commit come from the test-only hook `CORAL_EBPF_TEST_FAULT`
(coral_ebpf/storage/faults.py).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coral_ebpf.storage import faults
from tests.helpers.ack_load import Ledger, Sender, compare
from tests.helpers.agent_process import AgentProcess

SETTINGS: dict[str, Any] = {
    "log_level": "info",
    "beyla": {"enabled": False},
    "discovery": {"enabled": False},
    "storage": {"flush_interval": "100ms"},
}
MIXES = (("grpc", "traces"), ("http", "traces"), ("grpc", "metrics"), ("http", "metrics"))


def _agent(root: Path, env: dict[str, str] | None = None, settings: dict[str, Any] | None = None) -> AgentProcess:
    return AgentProcess(root, {**SETTINGS, **(settings or {})}, env)


def _senders(agent: AgentProcess, ledger: Ledger, stop: threading.Event, **kwargs: Any) -> list[Sender]:
    status = agent.status()
    addresses = {"grpc": status["receiver"]["grpc"]["address"], "http": status["receiver"]["http"]["address"]}
    return [
        Sender(number, transport, signal_name, addresses[transport], ledger=ledger, stop=stop, **kwargs)
        for number, (transport, signal_name) in enumerate(MIXES, start=1)
    ]


def _sigkill(agent: AgentProcess) -> None:
    assert agent.process is not None
    agent.process.send_signal(signal.SIGKILL)
    agent.process.wait(30)


def _restart_and_stop(agent: AgentProcess) -> dict[str, Any]:
    """Start the agent on the same state dir (which replays the spool), then SIGTERM it; its last status."""
    agent.exit_code = None
    agent.start(timeout=120)
    status = agent.wait_for(
        lambda s: s["storage"]["queue_depth"] == 0 and s["storage"]["replay_pending"] == 0,
        timeout=120,
        what="the spool replayed",
    )
    agent.stop()
    return status


@contextlib.contextmanager
def _cleanup(agent: AgentProcess) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(agent.log_tail(120))
        raise
    finally:
        agent.kill()


def test_sigkill_under_load_loses_no_acknowledged_item(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    ledger = Ledger()
    rng = random.Random(12)
    with _cleanup(agent):
        for _ in range(2):
            agent.exit_code = None
            agent.start(timeout=120)
            stop = threading.Event()
            senders = _senders(agent, ledger, stop)
            for sender in senders:
                sender.start()
            time.sleep(rng.uniform(1.0, 2.5))
            _sigkill(agent)
            stop.set()
            for sender in senders:
                sender.join(30)
        _restart_and_stop(agent)
    result = compare(agent.state_dir / "coral-ebpf.duckdb", ledger)
    assert ledger.items > 1000, f"the senders got too little through to test anything: {ledger.outcomes}"
    assert result.lost == 0, str(result)
    assert result.duplicates == 0, str(result)


@pytest.mark.parametrize("point", faults.POINTS)
def test_kill_between_spool_and_commit(tmp_path: Path, point: str) -> None:
    """The agent SIGKILLs itself at one step of the write path; a restart stores exactly what was acknowledged."""
    agent = _agent(tmp_path, env={"CORAL_EBPF_TEST_FAULT": point, "CORAL_EBPF_TEST_FAULT_AT": "8"})
    ledger = Ledger()
    with _cleanup(agent):
        agent.start(timeout=120)
        stop = threading.Event()
        senders = _senders(agent, ledger, stop, items_per_request=50, pause=0.05)
        for sender in senders:
            sender.start()
        assert agent.process is not None
        agent.process.wait(60)
        assert agent.process.returncode == -signal.SIGKILL, "the fault hook did not fire"
        stop.set()
        for sender in senders:
            sender.join(30)
        agent.env = {k: v for k, v in agent.env.items() if not k.startswith("CORAL_EBPF_TEST_FAULT")}
        status = _restart_and_stop(agent)
    result = compare(agent.state_dir / "coral-ebpf.duckdb", ledger)
    assert ledger.outcomes["ok"] >= 2, ledger.outcomes
    assert result.lost == 0, str(result)
    assert result.duplicates == 0, str(result)
    if point in ("after-spool-write", "after-spool-sync", "before-commit"):
        assert status["storage"]["spool"]["records_recovered"] >= 1, "the restart replayed the spool"


def test_a_damaged_spool_tail_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    agent = _agent(tmp_path, settings={"storage": {"flush_interval": "30s"}})  # rows stay in the spool only
    ledger = Ledger()
    with _cleanup(agent):
        agent.start(timeout=120)
        stop = threading.Event()
        for sender in _senders(agent, ledger, stop, items_per_request=50):
            for _ in range(5):
                assert sender.send_one(None if sender.transport == "http" else _channel(sender.address)) == "ok"
        _sigkill(agent)
        spool = agent.state_dir / "spool"
        newest = max(spool.glob("*.seg"))
        with newest.open("ab") as handle:  # a record torn by a crash: a header and half its payload
            handle.write(b"CSP1" + (4000).to_bytes(4, "little") + (10**9).to_bytes(8, "little") + b"\0" * 2000)
        status = _restart_and_stop(agent)
    assert status["storage"]["spool"]["corrupt_tails_dropped"] == 1
    assert status["storage"]["spool"]["records_recovered"] == 20
    result = compare(agent.state_dir / "coral-ebpf.duckdb", ledger)
    assert result.lost == 0 and result.duplicates == 0 and result.extra == 0, str(result)


def _channel(address: str) -> Any:
    import grpc

    return grpc.insecure_channel(address)


@contextlib.contextmanager
def _small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(filesystem: Path, leave: int) -> Path:
    """A ballast file that leaves about `leave` bytes free on `filesystem`."""
    ballast = filesystem / "ballast"
    stats = os.statvfs(filesystem)
    free = stats.f_bavail * stats.f_frsize
    with ballast.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return ballast


def test_disk_full_refuses_with_503_keeps_everything_and_resumes(tmp_path: Path) -> None:
    with _small_tmpfs(tmp_path / "fs", "96m") as filesystem:
        agent = AgentProcess(tmp_path / "agent", SETTINGS)
        agent.state_dir = filesystem / "state"
        agent.document["state_dir"] = str(agent.state_dir)
        import yaml

        agent.config_path.write_text(yaml.safe_dump(agent.document, sort_keys=False), encoding="utf-8")
        ledger = Ledger()
        with _cleanup(agent):
            agent.start(timeout=120)
            ballast = _fill(filesystem, 2 * 1024 * 1024)
            stop = threading.Event()
            senders = _senders(agent, ledger, stop, items_per_request=200)
            http_traces = senders[1]
            outcomes = [http_traces.send_one() for _ in range(200)]
            assert "http 503" in outcomes, f"a full disk must refuse with 503: {ledger.outcomes}"
            status = agent.status()["storage"]
            assert status["state"] == "degraded", status
            assert "No space left on device" in status["reason"], status
            assert isinstance(status["since"], float)
            human = agent.cli("status", columns=400)
            assert "degraded" in human.stdout and "No space left" in human.stdout, human.stdout
            assert http_traces.send_one() == "http 503", "still full: nothing further is acknowledged"
            ballast.unlink()
            deadline = time.monotonic() + 60
            while http_traces.send_one() != "ok":
                assert time.monotonic() < deadline, f"ingestion did not resume by itself: {ledger.outcomes}"
                time.sleep(0.5)
            for sender in senders:  # every transport and signal works again
                assert sender.send_one(_channel(sender.address) if sender.transport == "grpc" else None) == "ok"
            agent.wait_for(lambda s: s["storage"]["state"] == "running", timeout=60, what="storage running again")
            agent.stop()
        result = compare(agent.state_dir / "coral-ebpf.duckdb", ledger)
    assert result.lost == 0, str(result)
    assert result.duplicates == 0, str(result)
