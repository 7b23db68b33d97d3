"""Keeping files DuckDB creates private (0600) while the database is open.

DuckDB creates its file and WAL with mode 0666 & ~umask and re-creates the WAL after every
checkpoint; the umask is the only control there is. It is process-wide, so it is held with a
reference count (several `Storage` objects may be open, e.g. in tests) and the previous value
comes back when the last one closes.
"""

from __future__ import annotations

import os
import threading


class _Shared:
    lock = threading.Lock()
    holders = 0
    saved: int | None = None


class PrivateUmask:
    """One claim on "umask includes 077"; release exactly once per acquire."""

    def __init__(self) -> None:
        self._held = False

    def acquire(self) -> None:
        with _Shared.lock:
            if self._held:
                return
            if _Shared.holders == 0:
                saved = os.umask(0o077)
                os.umask(saved | 0o077)
                _Shared.saved = saved
            _Shared.holders += 1
            self._held = True

    def release(self) -> None:
        with _Shared.lock:
            if not self._held:
                return
            self._held = False
            _Shared.holders -= 1
            if _Shared.holders == 0 and _Shared.saved is not None:
                os.umask(_Shared.saved)
                _Shared.saved = None
