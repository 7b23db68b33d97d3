"""One running Beyla: its process, the threads that read its output and probe its /healthz,
and what they have seen. The supervisor owns the policy; this module only observes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from coral_ebpf.beyla import health, process
from coral_ebpf.beyla.diagnosis import WATCHER_FAILURE, diagnose_line
from coral_ebpf.beyla.instrumented import instrumented_pids
from coral_ebpf.beyla.logparse import LogLine, parse_line
from coral_ebpf.beyla.render import RenderedConfig
from coral_ebpf.discovery.model import ServiceEntry

child_log = logging.getLogger("coral_ebpf.beyla.child")

INSTRUMENTING = "instrumenting process"
TRACER_LAUNCHED = "Launching p.Tracer"  # INFO: from this line on Beyla's tracer sees requests
CAPABILITY_WARNING = "Required system capabilities not present, Beyla may malfunction"
_RESERVED_FIELDS = {"ts", "level", "logger", "msg", "source", "error", "beyla_pid", "stream"}


@dataclass
class Observations:
    """What the reader and health threads saw; read and written under the supervisor's lock."""

    first_error: LogLine | None = None  # the first ERROR line that names a cause Beyla stops for
    last_error: LogLine | None = None
    watcher_failure: LogLine | None = None
    warnings: list[str] = field(default_factory=list)
    instrumented_executables: set[str] = field(default_factory=set)  # `cmd` of `instrumenting process`
    instrumented_logged_pids: set[int] = field(default_factory=set)  # `pid` of those lines
    tracer_live: bool = False
    health_ok_ever: bool = False
    health_ok_at: float | None = None
    health_failures: int = 0  # consecutive
    last_health: health.HealthResult | None = None
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=20))


class BeylaInstance:
    def __init__(
        self,
        child: process.ChildProcess,
        rendered: RenderedConfig,
        services: list[ServiceEntry],
        health_port: int | None,
        lock: threading.Condition,
        *,
        health_interval: float,
        health_timeout: float,
        health_grace: float,
        trial_until: float | None = None,
        rollback: list[ServiceEntry] | None = None,
    ) -> None:
        self.child = child
        self.rendered = rendered
        self.services = services
        self.health_port = health_port
        self.trial_until = trial_until  # a config error before this (monotonic) time rolls back
        self.rollback = rollback  # the services of the config to go back to
        self.seen = Observations()
        self.intentional_stop = False
        self._lock = lock
        self._done = threading.Event()
        self._health_interval = health_interval
        self._health_timeout = health_timeout
        self._health_grace = health_grace
        self._threads = [
            threading.Thread(
                target=self._read, args=(child.popen.stdout, "stdout"), name=f"beyla-stdout-{child.pid}", daemon=True
            ),
            threading.Thread(
                target=self._read, args=(child.popen.stderr, "stderr"), name=f"beyla-stderr-{child.pid}", daemon=True
            ),
            threading.Thread(target=self._wait, name=f"beyla-wait-{child.pid}", daemon=True),
        ]
        if health_port:
            self._threads.append(threading.Thread(target=self._probe, name=f"beyla-health-{child.pid}", daemon=True))
        for thread in self._threads:
            thread.start()

    def exit_line(self) -> LogLine | None:
        """The line that best explains an exit: the first one naming a cause, else the last ERROR line."""
        return self.seen.first_error or self.seen.last_error

    def instrumented_pids(self) -> set[int]:
        """Instrumented processes by pid (call under the supervisor's lock)."""
        seen = self.seen
        excluded = {skipped.pid for skipped in self.rendered.skipped}
        return instrumented_pids(seen.instrumented_executables, seen.instrumented_logged_pids, self.services, excluded)

    @property
    def pid(self) -> int:
        return self.child.pid

    def exited(self) -> bool:
        return self.child.popen.poll() is not None

    def _notify(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def _wait(self) -> None:
        self.child.popen.wait()
        self._done.set()
        self._notify()

    def _read(self, stream: IO[bytes], name: str) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = parse_line(raw.decode("utf-8", "replace"), name)
                if not line.raw.strip():
                    continue
                self._relay(line)
                with self._lock:
                    self._observe(line)
                    self._lock.notify_all()
        except (OSError, ValueError):
            pass  # the pipe was closed under us during a stop

    def _observe(self, line: LogLine) -> None:
        seen = self.seen
        seen.recent.append(line.raw)
        if line.message == WATCHER_FAILURE:
            if seen.watcher_failure is None:
                seen.watcher_failure = line
        elif line.level == "ERROR":
            seen.last_error = line
            if seen.first_error is None and diagnose_line(line) is not None:
                seen.first_error = line
        if line.message.startswith(INSTRUMENTING):
            _note_instrumented(seen, line)
        elif line.message.startswith(TRACER_LAUNCHED):
            seen.tracer_live = True
        if line.message == CAPABILITY_WARNING:
            seen.warnings.append(f"{line.message}: {line.error}")

    def _relay(self, line: LogLine) -> None:
        fields: dict[str, Any] = {"source": "beyla", "beyla_pid": self.child.pid, "stream": line.stream}
        for key, value in line.fields.items():
            name = key.replace(" ", "_")
            fields[f"beyla_{name}" if name in _RESERVED_FIELDS else name] = value
        if line.error:
            fields["error"] = line.error
        child_log.log(line.python_level, line.message, extra={"fields": fields})

    def _probe(self) -> None:
        assert self.health_port is not None
        while not self._done.is_set():
            result = health.check(self.health_port, self._health_timeout)
            in_grace = time.monotonic() - self.child.started_at < self._health_grace
            with self._lock:
                seen = self.seen
                seen.last_health = result
                if result.ok:
                    seen.health_ok_ever = True
                    seen.health_ok_at = time.monotonic()
                    seen.health_failures = 0
                elif not in_grace:  # failures during the start-up grace do not count
                    seen.health_failures += 1
                self._lock.notify_all()
            # During the grace time, before the first success, look often so `running` is reported promptly.
            quick = in_grace and not self.seen.health_ok_ever
            self._done.wait(min(self._health_interval, 0.5) if quick else self._health_interval)

    def finish(self, timeout: float = 2.0) -> None:
        """After the process has exited: let the readers drain, stop the health thread, close pipes."""
        self._done.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=timeout)
        for stream in (self.child.popen.stdout, self.child.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def stop(self, kill_after: float) -> tuple[int | None, bool]:
        self.intentional_stop = True
        status, killed = process.terminate(self.child, kill_after)
        self.finish()
        return status, killed

    def rss_bytes(self) -> int | None:
        import psutil

        try:
            return int(psutil.Process(self.child.pid).memory_info().rss)
        except (psutil.Error, OSError):
            return None

    def data_since_start(self, last_data_seen: Callable[[], float | None] | None) -> bool:
        if last_data_seen is None:
            return False
        seen_at = last_data_seen()
        return seen_at is not None and seen_at >= self.child.started_wall


def _note_instrumented(seen: Observations, line: LogLine) -> None:
    executable = line.fields.get("cmd")
    if executable:
        seen.instrumented_executables.add(str(executable))
    with contextlib.suppress(TypeError, ValueError):
        seen.instrumented_logged_pids.add(int(str(line.fields.get("pid"))))
