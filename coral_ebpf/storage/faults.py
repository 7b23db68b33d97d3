"""Test-only crash points, chosen by the environment (never set in production).

`CORAL_EBPF_TEST_FAULT=<point>` makes the agent SIGKILL itself at that point of the
`CORAL_EBPF_TEST_FAULT_AT`-th passage (default 1), so integration tests can crash it exactly
between two steps of the write path:

- `after-spool-write`: a request's record is in the spool, not yet synced or acknowledged;
- `after-spool-sync`: the record is synced, the request not yet answered;
- `before-commit`: the writer inserted rows and the spool position, COMMIT not yet run;
- `after-commit`: the transaction committed, the applied segments not yet deleted.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading

POINTS = ("after-spool-write", "after-spool-sync", "before-commit", "after-commit")

_armed = os.environ.get("CORAL_EBPF_TEST_FAULT", "")
_at = int(os.environ.get("CORAL_EBPF_TEST_FAULT_AT", "1") or 1)
_passages = itertools.count(1)
_lock = threading.Lock()

if _armed and _armed not in POINTS:
    raise RuntimeError(f"CORAL_EBPF_TEST_FAULT={_armed!r}: expected one of {', '.join(POINTS)}")


def crash_point(point: str) -> None:
    """SIGKILL this process if the environment armed `point` and this is the chosen passage."""
    if point != _armed:
        return
    with _lock:
        if next(_passages) == _at:
            os.kill(os.getpid(), signal.SIGKILL)
