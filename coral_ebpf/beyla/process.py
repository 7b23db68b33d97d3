"""Starting and stopping one Beyla process: clean environment, own process group, parent-death
signal, memory guard, and a stop that leaves no process of the group behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from coral_ebpf.beyla import memory

log = logging.getLogger(__name__)

WRAPPER = Path(__file__).with_name("_exec_wrapper.py")
CHILD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def child_environment(home: Path, memory_soft: int | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Beyla's whole environment. Nothing is inherited: an inherited OTEL_SERVICE_NAME would rename every
    service, an inherited OTEL_EXPORTER_OTLP_* would override the YAML's endpoint.

    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE is deliberately absent: that Beyla honours it
    is not verified, so Beyla exports cumulative histograms and the receiver converts them to deltas.
    """
    env = {
        "PATH": CHILD_PATH,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "BEYLA_LOG_FORMAT": "json",
    }
    if memory_soft:
        env["GOMEMLIMIT"] = str(memory_soft)
    if extra:
        env.update(extra)
    return env


@dataclass
class ChildProcess:
    popen: subprocess.Popen[bytes]
    started_at: float  # time.monotonic()
    started_wall: float
    guard: memory.MemoryGuard

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


def spawn(
    binary: Path,
    args: list[str],
    env: dict[str, str],
    *,
    cwd: Path,
    guard: memory.MemoryGuard | None = None,
    pdeathsig: int = signal.SIGTERM,
    netns: bool = False,
    drop_caps: bool = False,
) -> ChildProcess:
    """Run `binary args` through the exec wrapper, in its own process group, with pipes for its output.

    Must be called from a thread that outlives the child: Linux sends the parent-death signal when
    the *thread* that forked exits, not the process.
    """
    guard = guard or memory.MemoryGuard.none()
    command = [sys.executable, "-I", str(WRAPPER), "--parent", str(os.getpid()), "--pdeathsig", str(int(pdeathsig))]
    command += guard.wrapper_options()
    if netns:
        command.append("--netns")
    if drop_caps:
        command.append("--drop-caps")
    command += ["--", str(binary), *args]
    popen = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        close_fds=True,
        process_group=0,
    )
    return ChildProcess(popen, time.monotonic(), time.time(), guard)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the whole process group; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def terminate(child: ChildProcess, timeout: float) -> tuple[int | None, bool]:
    """SIGTERM the group, SIGKILL it after `timeout`; return (exit status, whether SIGKILL was needed).

    Waits until no process of the group is left, so nothing Beyla started outlives the stop.
    """
    pgid = child.pid
    killed = False
    if child.alive():
        signal_group(pgid, signal.SIGTERM)
        try:
            child.popen.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            log.warning(
                "Beyla did not stop within %.1fs of SIGTERM; sending SIGKILL",
                timeout,
                extra={"fields": {"pid": pgid, "source": "beyla"}},
            )
            signal_group(pgid, signal.SIGKILL)
            killed = True
            child.popen.wait()
    # Anything else left in the group (a helper Beyla forked) goes too.
    deadline = time.monotonic() + 5.0
    while group_alive(pgid) and time.monotonic() < deadline:
        signal_group(pgid, signal.SIGKILL)
        time.sleep(0.02)
    with contextlib.suppress(OSError):
        child.guard.release()
    return child.popen.returncode, killed
