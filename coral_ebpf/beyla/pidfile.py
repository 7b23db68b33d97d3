"""`<state_dir>/beyla/beyla.pid`: which Beyla the agent started, so that one left behind by an agent
that died without stopping it (its parent-death SIGTERM ignored) is stopped before a new one starts.

A record is the pid and the process start time: together they name one process for good (exec
keeps both), so a reused pid is never mistaken for Beyla.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from pathlib import Path

import psutil

from coral_ebpf.beyla import process
from coral_ebpf.safe_paths import UnsafePathError, open_private, read_private

log = logging.getLogger(__name__)


def write(path: Path, pid: int) -> None:
    try:
        record = {"pid": pid, "create_time": psutil.Process(pid).create_time()}
    except psutil.Error:
        return
    fd = open_private(path, os.O_WRONLY | os.O_CREAT, 0o600, "Beyla pid file")
    os.ftruncate(fd, 0)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(record, handle)


def stop_stale(path: Path, timeout: float) -> int | None:
    """Stop the Beyla `path` records if it still runs (SIGTERM, SIGKILL after `timeout`); return its pid."""
    try:
        record = json.loads(read_private(path, "Beyla pid file"))
        stale = psutil.Process(int(record["pid"]))
        if abs(stale.create_time() - float(record["create_time"])) > 0.01:
            return None
    except (OSError, ValueError, KeyError, TypeError, psutil.Error, UnsafePathError):
        return None
    log.warning(
        "stopping a Beyla left running by a previous agent", extra={"fields": {"source": "beyla", "pid": stale.pid}}
    )
    with contextlib.suppress(OSError, psutil.Error):
        process.signal_group(stale.pid, signal.SIGTERM)
        stale.wait(timeout=timeout)
    if process.group_alive(stale.pid):
        process.signal_group(stale.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        path.unlink()
    return stale.pid
