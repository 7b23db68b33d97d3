"""`coral-ebpf discover --json` as a user runs it: one JSON object per line, flushed as it happens."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.discovery import ListenerProcess, netns_inode_of
from tests.helpers.timing import scaled

# Its outcome depends on the kernel: the VM suites (make vm-test, make vagrant-test) run it.
pytestmark = pytest.mark.kernel

REQUIRED_KEYS = {"event", "pid", "comm", "port", "netns", "ts", "ts_monotonic_ns", "rule"}


class LineReader:
    """Reads a child's stdout on a thread so the test can wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self._stream = proc.stdout
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self._stream:
            self.lines.put(line)

    def wait_for(self, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        while True:
            line = self.lines.get(timeout=timeout)
            record = json.loads(line)  # every line must be one JSON object
            assert isinstance(record, dict) and record.keys() >= REQUIRED_KEYS, line
            self.seen.append(record)
            if all(record.get(key) == value for key, value in fields.items()):
                return record


def _config(tmp_path: Path, state_dir: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"state_dir: {state_dir}\n")
    return path


def test_discover_json_lines_until_interrupted(state_dir: Path, netns: str, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "coral_ebpf", "discover", "--json", "--config", str(_config(tmp_path, state_dir))]
    with ListenerProcess(netns, env={"OTEL_SERVICE_NAME": "before"}) as before:
        before_port = before.listen(4, "127.0.0.1")
        cli = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lines = LineReader(cli)
            snapshot = lines.wait_for(timeout=scaled(60), event="snapshot", pid=before.pid)  # includes BCC's compile
            assert (snapshot["port"], snapshot["netns"], snapshot["service"]) == (
                before_port,
                netns_inode_of(netns),
                "before",
            )
            with ListenerProcess(netns) as after:
                port = after.listen(6, "::1")
                listened = lines.wait_for(event="listen", pid=after.pid)
                assert (listened["port"], listened["family"], listened["address"]) == (port, "ipv6", "::1")
                after.close(port)
                closed = lines.wait_for(event="close", pid=after.pid)
                assert closed["port"] == port and closed["ts_monotonic_ns"] > listened["ts_monotonic_ns"]
            before.exec(["/bin/sleep", "60"])
            execd = lines.wait_for(event="exec", pid=before.pid)
            assert execd["filename"] == "/bin/sleep" and execd["port"] is None
            before.kill()
            lines.wait_for(event="exit", pid=before.pid)
            cli.send_signal(signal.SIGINT)
            assert cli.wait(scaled(15)) == 0, "discover did not stop after SIGINT"
        finally:
            if cli.poll() is None:
                cli.kill()
            _out, errors = cli.communicate()
            if errors.strip():
                sys.stderr.write(f"discover's stderr:\n{errors}\n")


def test_discover_stops_after_duration(state_dir: Path, tmp_path: Path) -> None:
    argv = [
        sys.executable, "-m", "coral_ebpf", "discover", "--duration", "1",
        "--config", str(_config(tmp_path, state_dir)),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(60), check=False)
    assert done.returncode == 0, done.stderr
    assert "Services listening now" in done.stdout
