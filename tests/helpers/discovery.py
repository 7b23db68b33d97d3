"""Helpers for discovery's tests: a controllable listener process and waiting on the registry."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from coral_ebpf.discovery.model import ServiceEntry
from coral_ebpf.discovery.registry import ServiceRegistry

HELPERS = Path(__file__).resolve().parent
LISTENER_CHILD = HELPERS / "listener_child.py"
CLONE_WITH_PID = HELPERS / "clone_with_pid.py"

T = TypeVar("T")


def entries_of(registry: ServiceRegistry, pid: int) -> list[ServiceEntry]:
    return [entry for entry in registry.snapshot() if entry.pid == pid]


def ports_of(registry: ServiceRegistry, pid: int) -> set[int]:
    return {port for entry in entries_of(registry, pid) for port in entry.ports}


def netns_inode_of(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


class ListenerProcess:
    """A child running tests/helpers/listener_child.py, optionally inside a named netns or with a chosen pid."""

    def __init__(
        self,
        netns: str | None = None,
        env: dict[str, str] | None = None,
        pid: int | None = None,
        python: str = sys.executable,
    ) -> None:
        argv: list[str] = [python, str(LISTENER_CHILD)]
        if pid is not None:
            argv = [python, str(CLONE_WITH_PID), str(pid), *argv]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._stdin = self.proc.stdin
        self._stdout = self.proc.stdout
        # `ip netns exec` execs in place, so the pid is the listener's; the clone helper names its child.
        self.pid = int(self._stdout.readline()) if pid is not None else self.proc.pid
        self.children: list[int] = []

    def command(self, line: str) -> dict[str, Any]:
        self._stdin.write(line + "\n")
        self._stdin.flush()
        reply = self._stdout.readline()
        if not reply:
            raise AssertionError(f"listener {self.pid} exited on {line!r}")
        result: dict[str, Any] = json.loads(reply)
        return result

    def listen(self, family: int = 4, address: str = "127.0.0.1", port: int = 0, reuseport: bool = False) -> int:
        reply = self.command(f"listen {family} {address} {port} {'reuseport' if reuseport else ''}".strip())
        return int(reply["port"])

    def listen_full(self, family: int = 4, address: str = "127.0.0.1") -> dict[str, Any]:
        return self.command(f"listen {family} {address} 0")

    def autolisten(self, family: int = 4) -> int:
        return int(self.command(f"autolisten {family}")["port"])

    def close(self, port: int) -> None:
        self.command(f"close {port}")

    def fork(self) -> int:
        child = int(self.command("fork")["child"])
        self.children.append(child)
        return child

    def fork_exec(self, argv: Sequence[str]) -> int:
        child = int(self.command("forkexec " + " ".join(argv))["child"])
        self.children.append(child)
        return child

    def exec(self, argv: Sequence[str]) -> None:
        self._stdin.write("exec " + " ".join(argv) + "\n")
        self._stdin.flush()

    def exit(self) -> None:
        self._stdin.write("exit\n")
        self._stdin.flush()
        self.proc.wait(10)

    def kill(self) -> None:
        for pid in {self.pid, *self.children} - {self.proc.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def __enter__(self) -> ListenerProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.kill()
