"""Issue 12: a spool whose fsync fails with EIO refuses (503), loses nothing acknowledged, and resumes.

The spool directory is a FUSE pass-through file system (tests/helpers/faulty_fs.py) that answers
fsync with EIO while switched to fail: the agent's own fdatasync gets the error from the kernel,
as from a failing disk. Real agent, real senders over both transports, the real DuckDB file
compared with exactly what was acknowledged.
"""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import grpc
import pytest

from coral_ebpf.storage.spool import Spool, SpoolWriteError
from tests.helpers.ack_load import Ledger, Sender, compare, traces_request
from tests.helpers.agent_process import AgentProcess
from tests.helpers.faulty_fs import FaultyFs

SETTINGS = {
    "log_level": "info",
    "beyla": {"enabled": False},
    "discovery": {"enabled": False},
    "storage": {"flush_interval": "100ms"},
}
MIXES = (("grpc", "traces"), ("http", "traces"), ("grpc", "metrics"), ("http", "metrics"))


def _send(sender: Sender) -> str:
    if sender.transport == "http":
        return sender.send_one()
    channel = grpc.insecure_channel(sender.address)
    try:
        return sender.send_one(channel)
    finally:
        channel.close()


def _retry_after_of_a_refused_http_request(address: str) -> tuple[int, str | None]:
    host, _, port = address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        body, _spans = traces_request(99, 10)
        connection.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After")
    finally:
        connection.close()


def test_a_failing_spool_fsync_refuses_keeps_everything_acknowledged_and_resumes(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "agent", SETTINGS)
    agent.state_dir.mkdir(mode=0o700, parents=True)
    ledger = Ledger()
    with FaultyFs(tmp_path / "spool-disk", agent.state_dir / "spool") as disk:
        try:
            agent.start(timeout=120)
            status = agent.status()["receiver"]
            addresses = {"grpc": status["grpc"]["address"], "http": status["http"]["address"]}
            senders = [
                Sender(
                    number,
                    transport,
                    signal_name,
                    addresses[transport],
                    ledger=ledger,
                    stop=threading.Event(),
                    items_per_request=50,
                )
                for number, (transport, signal_name) in enumerate(MIXES, start=1)
            ]
            for _ in range(5):
                assert [_send(sender) for sender in senders] == ["ok"] * len(senders), ledger.outcomes
            acknowledged_before = ledger.items

            disk.fail_syncs(True)
            outcomes = [_send(sender) for sender in senders for _ in range(3)]
            assert set(outcomes) == {"http 503", "grpc UNAVAILABLE"}, f"nothing is acknowledged: {outcomes}"
            assert ledger.items == acknowledged_before
            refused, retry_after = _retry_after_of_a_refused_http_request(addresses["http"])
            assert refused == 503 and retry_after is not None and float(retry_after) > 0, (refused, retry_after)
            storage = agent.status()["storage"]
            assert storage["state"] == "degraded", storage
            assert "EIO" in storage["reason"], storage
            assert isinstance(storage["since"], float)
            human = agent.cli("status", columns=400)
            assert "degraded" in human.stdout and "EIO" in human.stdout, human.stdout

            disk.fail_syncs(False)
            deadline = time.monotonic() + 60
            while _send(senders[1]) != "ok":
                assert time.monotonic() < deadline, f"ingestion did not resume by itself: {ledger.outcomes}"
                time.sleep(0.5)
            assert [_send(sender) for sender in senders] == ["ok"] * len(senders), ledger.outcomes
            agent.wait_for(lambda s: s["storage"]["state"] == "running", timeout=60, what="storage running again")
            agent.stop()
        except BaseException:
            print(agent.log_tail(120))
            raise
        finally:
            agent.kill()
    result = compare(agent.state_dir / "coral-ebpf.duckdb", ledger)
    assert result.lost == 0, str(result)


def test_a_record_covered_by_a_failed_sync_is_never_acknowledged_later(tmp_path: Path) -> None:
    """Linux reports a writeback error to fsync once; a later fsync of the same file may succeed
    although the data never reached the disk. The spool must not take that success for its record."""
    with FaultyFs(tmp_path / "disk", tmp_path / "mnt") as disk:
        directory = tmp_path / "mnt" / "spool"
        directory.mkdir(mode=0o700)
        spool = Spool(directory, 64 * 1024 * 1024)
        assert spool.recover(0) == []
        first = spool.append(b"kept" * 100, lambda _seq: None)
        spool.wait_durable(first)
        disk.fail_syncs(True)
        refused = spool.append(b"refused" * 100, lambda _seq: None)
        with pytest.raises(SpoolWriteError, match="EIO"):
            spool.wait_durable(refused)
        assert "EIO" in spool.status()["error"]
        disk.fail_syncs(False)
        with pytest.raises(SpoolWriteError):
            spool.wait_durable(refused)
        later = spool.append(b"later" * 100, lambda _seq: None)
        spool.wait_durable(later)
        assert spool.status()["error"] == ""
        assert spool.status()["durable_seq"] == later
        spool.close()
        replayed = Spool(directory, 64 * 1024 * 1024).recover(0)
        sequence = [ref.seq for ref in replayed]
        assert sequence[0] == first and sequence[-1] == later
