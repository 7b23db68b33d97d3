"""Generic lifecycle plumbing for the agent: the state dir, the single-instance lock, ordered
start/stop of components, and waiting for a stop signal."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coral_ebpf.agent.component import Component
from coral_ebpf.agent.status import PartStatus
from coral_ebpf.errors import CoralError
from coral_ebpf.safe_paths import open_dir, open_private, prepare_private_dir, read_private
from coral_ebpf.state import PartState

log = logging.getLogger(__name__)

AGENT_LOCK = "agent.lock"


class AgentAlreadyRunningError(CoralError):
    pass


def prepare_state_dir(path: Path) -> None:
    """Create the state dir 0700 (it holds the database and generated configs).

    A state dir that is a symlink, owned by another non-root user, or under a directory another
    user may change is refused (`safe_paths`).
    """
    try:
        prepare_private_dir(path, "state directory")
    except PermissionError as exc:
        raise CoralError(
            f"cannot create the state directory {path}: permission denied",
            "run as root (sudo coral-ebpf start), or set state_dir to a directory you own",
        ) from exc


@contextlib.contextmanager
def single_instance_lock(state_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on <state_dir>/agent.lock while the agent runs.

    The lock file is opened inside the state dir's own descriptor with O_NOFOLLOW, so neither a
    symlink planted as the lock file nor a swapped state dir can make root truncate another file.
    """
    lock_path = state_dir / AGENT_LOCK
    with open_dir(state_dir, "state directory") as directory:
        fd = open_private(lock_path, os.O_RDWR | os.O_CREAT, 0o600, "lock file", dir_fd=directory)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise AgentAlreadyRunningError(
                f"another coral-ebpf agent (pid {holder}) is using the state directory {state_dir}",
                "stop it first, or run this one with a different state_dir",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def lock_holder(state_dir: Path) -> int | None:
    """The pid of a live `coral-ebpf start` that holds (or last held) <state_dir>/agent.lock, else None.

    Reads the pid the holder wrote; it never takes the lock itself, so it cannot make a starting
    agent believe another one runs. A stale pid is recognised by its command line.
    """
    try:
        text = read_private(state_dir / AGENT_LOCK, "lock file").strip()
        pid = int(text)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, CoralError):
        return None
    words = [word.decode(errors="replace") for word in cmdline]
    is_agent = any("coral-ebpf" in word or "coral_ebpf" in word for word in words) and "start" in words
    return pid if is_agent else None


@dataclass
class ComponentSlot:
    """A component and what the agent knows about it before/after it runs."""

    name: str
    component: Component | None = None
    state: PartState = PartState.PENDING
    reason: str = ""
    since: float = field(default_factory=time.time)

    def set(self, state: PartState, reason: str = "") -> None:
        self.state = state
        self.reason = reason
        self.since = time.time()

    def status(self) -> PartStatus:
        details: dict[str, Any] = {}
        if self.component is not None and self.state == PartState.RUNNING:
            try:
                details = dict(self.component.status())
            except Exception as exc:  # a status bug must not take status down
                details = {"status_error": str(exc)}
        return PartStatus(self.state, self.since, self.reason, details)


class StopSignal:
    """Turns SIGTERM/SIGINT into an event the main thread waits on."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: str | None = None

    def install(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            self.received = signal.Signals(signum).name
            self.event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def wait(self, timeout: float | None = None) -> bool:
        return self.event.wait(timeout)

    def trigger(self, reason: str) -> None:
        self.received = reason
        self.event.set()
