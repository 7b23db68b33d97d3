"""systemd's readiness protocol (`Type=notify`): one datagram to `$NOTIFY_SOCKET` per state change.

The protocol is a few `KEY=value` lines sent over an AF_UNIX datagram socket (sd_notify(3));
a name starting with `@` is in the abstract namespace. Outside systemd the variable is unset
and every call is a no-op, so the agent never depends on running under systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


def notify(*lines: str) -> bool:
    """Send `lines` (e.g. "READY=1", "STATUS=…") to the service manager; True if one listens."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    message = "\n".join(lines).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(message)
    except OSError as exc:
        log.warning("could not notify systemd", extra={"fields": {"socket": address, "error": str(exc)}})
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def reloading() -> bool:
    # MONOTONIC_USEC lets `Type=notify-reload` (systemd 253+) tell this reload from an older one.
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def stopping() -> bool:
    return notify("STOPPING=1", "STATUS=stopping")
