"""`coral-ebpf start` as a real subprocess, for end-to-end tests.

    agent = AgentProcess(tmp_path, {"red": {"export_interval": "1s"}})
    agent.start()                      # waits until `status` answers with every part settled
    agent.cli_json("query", "http")    # the CLI, with the agent's --config
    agent.stop()                       # SIGTERM; exit code 0; no child (Beyla) left behind

Each agent gets its own config file, state dir, control socket and OTLP listeners on
127.0.0.1 port 0 (the bound addresses come from `status`). The agent's log (stdout and stderr)
goes to `<root>/agent.log`; failures quote its tail.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from coral_ebpf.agent.control_client import ControlClient
from coral_ebpf.errors import CoralError
from tests.helpers.timing import eventually

REPO = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("coral-ebpf")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "coral_ebpf"]
# States a part passes through on its way up; anything else is settled (running, failed, ...).
UNSETTLED = frozenset({"pending", "starting"})
PARTS = (
    "probe", "storage", "export", "transform", "receiver", "discovery", "red", "beyla", "control", "colony_api",
    "telemetry",
)  # fmt: skip

Status = dict[str, Any]


def run_cli(*args: str, timeout: float = 120, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it; `columns` sets the terminal width tables are laid out for."""
    env = None if columns is None else {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO, env=env
    )


def query_json(config: Path, *args: str) -> Any:
    """`coral-ebpf query ARGS --json --config CONFIG`, which must succeed; its parsed output."""
    result = run_cli("query", *args, "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, section by section."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def settled(document: Status) -> bool:
    return all(document.get(part, {}).get("state") not in UNSETTLED for part in PARTS)


def live_processes(identities: Iterable[tuple[int, float]]) -> list[psutil.Process]:
    """Those of the (pid, create_time) processes that still run (zombies waiting to be reaped do not)."""
    alive = []
    for pid, created in identities:
        try:
            process = psutil.Process(pid)
            if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def wait_gone(pgids: Iterable[int], identities: Iterable[tuple[int, float]], timeout: float = 15.0) -> None:
    """Assert that these process groups and processes are gone (allowing a moment for reaping)."""
    pgids, identities = list(pgids), list(identities)

    def left() -> list[psutil.Process]:
        return [p for pgid in pgids for p in group_members(pgid)] + live_processes(identities)

    def described() -> str:
        alive = [f"{p.pid} {p.name()} pgid {os.getpgid(p.pid)}" for p in left() if p.is_running()]
        return f"the agent's processes to go (left behind: {alive})"

    eventually(left, timeout, described, until=lambda processes: not processes, interval=0.2)


class AgentProcess:
    """One `coral-ebpf start` subprocess with its own config, state dir, socket and log."""

    def __init__(
        self, root: Path, settings: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        """`settings` go on top of the test defaults; `env` adds environment variables for the agent."""
        self.root = root
        self.env = {**os.environ, **(env or {})}
        root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "config.yaml"
        self.state_dir = root / "state"
        self.socket = root / "run" / "control.sock"
        self.log_path = root / "agent.log"
        base: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "agent_id": "e2e-agent",
            "log_level": "info",
            "control": {"socket": str(self.socket)},
            "otlp": {"grpc_endpoint": "127.0.0.1:0", "http_endpoint": "127.0.0.1:0"},
            "telemetry": {"endpoint": "127.0.0.1:0"},
        }
        self.document = merge(base, settings or {})
        self.config_path.write_text(yaml.safe_dump(self.document, sort_keys=False), encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.last_status: Status = {}

    # ------------------------------------------------------------------ running

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, timeout: float = 240, ready: Callable[[Status], bool] | None = None) -> Status:
        """Start the agent and wait until status answers with every part settled (and `ready`, if given)."""
        self.launch()
        return self.wait_for(
            lambda s: settled(s) and (ready is None or ready(s)), timeout=timeout, what="every part settled"
        )

    def launch(self) -> None:
        """Start `coral-ebpf start` and return at once."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*CLI, "start", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env=self.env,
            )

    def status(self) -> Status:
        document: Status = ControlClient(self.socket, timeout=30).status()
        self.last_status = document
        return document

    def wait_for(self, predicate: Callable[[Status], bool], *, timeout: float = 120, what: str = "") -> Status:
        """Poll the control socket until `predicate(status)` holds; fail with the log if the agent dies."""

        def probe() -> Status | None:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"the agent exited ({self.process.returncode}) while waiting for {what}\n{self.log_tail()}"
                )
            with contextlib.suppress(CoralError, OSError):
                return self.status()
            return None

        def described() -> str:
            document = self.last_status or {}
            parts = {p: document.get(p, {}).get("state") for p in PARTS}
            return (
                f"{what}; states {parts}\n"
                f"beyla: {json.dumps(document.get('beyla'), default=str)[:3000]}\n{self.log_tail()}"
            )

        def holds(document: Status | None) -> bool:
            return document is not None and predicate(document)

        found = eventually(probe, timeout, described, until=holds, interval=0.25)
        assert found is not None
        return found

    def descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.pid).children(recursive=True)
        return []

    def stop(self, timeout: float = 120, extra_pgids: Iterable[int] = ()) -> int:
        """SIGTERM the agent, wait, assert exit code 0 and that none of its children (or `extra_pgids`) is left."""
        assert self.process is not None
        if self.exit_code is not None:
            return self.exit_code
        children = self.descendants()
        identities = []
        pgids = set(extra_pgids)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                identities.append((child.pid, child.create_time()))
                pgid = os.getpgid(child.pid)
                if pgid != os.getpgid(0):
                    pgids.add(pgid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the agent did not stop within {timeout}s of SIGTERM\n{self.log_tail()}") from None
        assert self.exit_code == 0, f"the agent exited with {self.exit_code}\n{self.log_tail()}"
        try:
            wait_gone(pgids, identities)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None
        return self.exit_code

    def kill(self) -> None:
        """Last resort (a failed test): SIGKILL the agent and whatever it started."""
        if self.process is None or self.process.poll() is not None:
            return
        for child in self.descendants():
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self.process.kill()
        self.process.wait()

    # ------------------------------------------------------------------ CLI and log

    def cli(self, *args: str, timeout: float = 120, columns: int | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--config", str(self.config_path), timeout=timeout, columns=columns)

    def cli_json(self, *args: str) -> Any:
        result = self.cli(*args, "--json")
        assert result.returncode == 0, f"coral-ebpf {' '.join(args)} --json: {result.stderr}\n{self.log_tail()}"
        return json.loads(result.stdout)

    def query_until(self, kind: str, service: str, done: Callable[[Any], object], timeout: float = 60) -> Any:
        """`coral-ebpf query <kind> --service S --since 1h --json` until `done(result)`.

        The agent writes rows every 200 ms, so a few polls suffice.
        """
        return eventually(
            lambda: self.cli_json("query", kind, "--service", service, "--since", "1h"),
            timeout,
            f"`coral-ebpf query {kind} --service {service}` to show what was sent",
            until=done,
            interval=0.5,
        )

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 80) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- agent log ({self.log_path}), last {len(tail)} lines ---\n" + "\n".join(tail)

    # ------------------------------------------------------------------ convenience

    def http_address(self) -> str:
        return str(self.status()["receiver"]["http"]["address"])

    def grpc_address(self) -> str:
        return str(self.status()["receiver"]["grpc"]["address"])

    def telemetry_address(self) -> str:
        return str(self.status()["telemetry"]["address"])


CALL_REPORT = pytest.StashKey[pytest.TestReport]()  # set by tests/integration/conftest.py


def call_failed(node: pytest.Item) -> bool:
    report = node.stash.get(CALL_REPORT, None)
    return report is not None and report.failed


@contextlib.contextmanager
def running_agent(
    root: Path, settings: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None, **start: Any
) -> Iterator[AgentProcess]:
    """An agent for the block; at its end SIGTERM, exit code 0 and nothing left behind are checked.

    When the block fails, the agent's log is printed (pytest shows it with the failure) and the
    agent is still stopped, by SIGKILL if SIGTERM does not do it.
    """
    agent = AgentProcess(root, settings, env)
    try:
        agent.start(**start)
        yield agent
    except BaseException:
        sys.stdout.write(agent.log_tail(200) + "\n")
        with contextlib.suppress(Exception):
            agent.stop(timeout=60)
        raise
    else:
        agent.stop()
    finally:
        agent.kill()
