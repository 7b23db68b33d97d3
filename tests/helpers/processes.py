"""Child processes and ports of the tests: a free loopback port, a child that prints its port, and a stop
that does not hang (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def stop_process(process: subprocess.Popen[str] | subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, `grace` seconds to exit, then SIGKILL; reaped either way."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def port_printing_child(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None, grace: float = 5.0, what: str = "server"
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A child whose first line on stdout is the port it listens on; stopped at the end of the block."""
    process = subprocess.Popen(list(args), cwd=cwd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"{what} exited before printing its port")
        yield process, int(line)
    finally:
        stop_process(process, grace)
