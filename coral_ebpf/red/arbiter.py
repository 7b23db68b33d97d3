"""Which RED engine serves the host, and the fallback from Beyla to the built-in BCC engine.

`red.engine` decides once, at start (`choose_engine` in selection.py):

| red.engine | Beyla started               | built-in engine                                  |
|------------|-----------------------------|--------------------------------------------------|
| bcc        | no                          | now                                              |
| auto       | if beyla.enabled            | now when Beyla cannot serve; else on standby and |
|            |                             | started once when Beyla becomes failed/unsupported |
| beyla      | yes                         | never (standby, and the status says so)          |

After that the arbiter only reacts to Beyla's state changes, which the supervisor pushes to
`on_beyla_state` as they happen. Starting the built-in engine compiles BPF (seconds), so it runs
on a thread of its own rather than on the supervisor's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from coral_ebpf.red.selection import Engine, choose_engine
from coral_ebpf.state import PartState, StateChange

log = logging.getLogger(__name__)

# Beyla states after which Beyla will not serve RED without a person's help.
BEYLA_GAVE_UP = frozenset({PartState.FAILED, PartState.UNSUPPORTED})

StartBuiltin = Callable[[str], bool]  # start the built-in engine with this reason; True if it runs
Spawn = Callable[[Callable[[], None]], object]


def _thread(work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work, name="red-fallback", daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class Plan:
    """What the agent starts now."""

    engine: Engine
    reason: str
    start_beyla: bool
    beyla_off_reason: str  # why Beyla is not started ("" when it is)
    start_builtin: bool  # start the built-in engine now
    standby_reason: str  # the built-in engine's reason while it waits ("" when started now)


class RedArbiter:
    """Owns the choice between Beyla and the built-in engine, and the one fallback from the first to the second."""

    def __init__(self, setting: str, beyla_enabled: bool, start_builtin: StartBuiltin, spawn: Spawn = _thread) -> None:
        self.setting = setting
        self.beyla_enabled = beyla_enabled
        self._start_builtin = start_builtin
        self._spawn = spawn
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._reason = ""
        self._fallback_armed = False
        self._fallback_done: threading.Event | None = None
        self._stopping = False

    @property
    def engine(self) -> Engine | None:
        return self._engine

    @property
    def reason(self) -> str:
        return self._reason

    def decide(self, beyla_can_run: bool, beyla_binary_found: bool) -> Plan:
        """The start-up choice. `beyla_can_run`: the probe's verdict (or beyla.force_start)."""
        engine, reason = choose_engine(self.setting, beyla_can_run, beyla_binary_found, self.beyla_enabled)
        start_beyla = self.beyla_enabled and self.setting != Engine.BCC
        beyla_off = "" if start_beyla else ("beyla.enabled is false" if not self.beyla_enabled else "red.engine is bcc")
        if engine == Engine.BCC:
            standby = ""
        elif self.setting == "auto":
            standby = f"{reason}; the built-in probe starts if Beyla fails"
        else:
            standby = f"{reason}; the built-in probe stays off (red.engine auto falls back to it)"
        with self._lock:
            self._engine, self._reason = engine, reason
            self._fallback_armed = engine == Engine.BEYLA and self.setting == "auto"
        return Plan(engine, reason, start_beyla, beyla_off, engine == Engine.BCC, standby)

    def builtin_started(self, reason: str) -> None:
        """The built-in engine serves RED (at start, or after the fallback)."""
        with self._lock:
            self._engine, self._reason = Engine.BCC, reason
            self._fallback_armed = False

    def on_beyla_state(self, change: StateChange) -> None:
        """The supervisor's listener: on Beyla giving up (red.engine auto), start the built-in engine once."""
        if change.state not in BEYLA_GAVE_UP:
            return
        with self._lock:
            if not self._fallback_armed or self._stopping:
                return
            self._fallback_armed = False
            done = self._fallback_done = threading.Event()  # set before stop() can look for it
        reason = f"Beyla is {change.state} ({change.reason or 'no diagnosis'}): using the built-in BCC probe"
        log.warning("falling back to the built-in RED engine", extra={"fields": {"reason": reason}})
        self._spawn(lambda: self._fall_back(reason, done))

    def _fall_back(self, reason: str, done: threading.Event) -> None:
        try:
            if self._start_builtin(reason):
                self.builtin_started(reason)
        finally:
            done.set()

    def stop(self, timeout: float) -> None:
        """No fallback from now on; a fallback engine still starting finishes first (or it would be left running)."""
        with self._lock:
            self._stopping = True
            self._fallback_armed = False
            done = self._fallback_done
        if done is not None:
            done.wait(timeout)
