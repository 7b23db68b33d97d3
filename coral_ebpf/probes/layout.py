"""What every probe's layout shares, and how a layout reaches the C compiler."""

from __future__ import annotations

COMM_LEN = 16  # TASK_COMM_LEN: bpf_get_current_comm() fills this many bytes


def text(raw: bytes) -> str:
    """A NUL-terminated C string field (ctypes already cut it at the NUL) as text."""
    return raw.decode("utf-8", "replace")
