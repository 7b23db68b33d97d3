"""What every probe's layout and decoder share."""

from __future__ import annotations

import ctypes
from typing import TypeVar

_Record = TypeVar("_Record", bound=ctypes.Structure)

COMM_LEN = 16  # TASK_COMM_LEN: bpf_get_current_comm() fills this many bytes


def text(raw: bytes) -> str:
    """A NUL-terminated C string field (ctypes already cut it at the NUL) as text."""
    return raw.decode("utf-8", "replace")


def record_at(structure: type[_Record], data: int, size: int) -> _Record | None:
    """The `structure` at address `data` (from BCC's callback); None when `size` is too short for it."""
    if size < ctypes.sizeof(structure):
        return None
    return structure.from_address(data)
