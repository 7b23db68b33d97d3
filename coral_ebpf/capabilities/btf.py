"""A small BTF reader: enough to prove `/sys/kernel/btf/vmlinux` is well formed and to find function ids.

fentry programs are loaded against the BTF id of the kernel function they attach to, so the probe
needs the id of a function by name. BTF (include/uapi/linux/btf.h) is a header, a type section
and a string section; type ids are the 1-based position of each type record, so finding one
function means walking every record. The walk also checks each record's kind and bounds,
which is what "parses" means in the probe's report.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

BTF_MAGIC = 0xEB9F
KIND_FUNC = 12
KIND_NAMES = {
    1: "INT", 2: "PTR", 3: "ARRAY", 4: "STRUCT", 5: "UNION", 6: "ENUM", 7: "FWD", 8: "TYPEDEF",
    9: "VOLATILE", 10: "CONST", 11: "RESTRICT", 12: "FUNC", 13: "FUNC_PROTO", 14: "VAR",
    15: "DATASEC", 16: "FLOAT", 17: "DECL_TAG", 18: "TYPE_TAG", 19: "ENUM64",
}  # fmt: skip

# Bytes that follow the 12-byte common record: (fixed extra, bytes per vlen member).
_TRAILER = {
    1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0), 8: (0, 0),
    9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0), 15: (0, 12), 16: (0, 0),
    17: (4, 0), 18: (0, 0), 19: (0, 12),
}  # fmt: skip

_HEADER = struct.Struct("<HBBIIIII")
_RECORD = struct.Struct("<III")


class BtfError(ValueError):
    """The BTF blob is malformed (or is not BTF at all)."""


@dataclass(frozen=True)
class BtfSummary:
    """What a full walk of a BTF blob found."""

    size: int
    types: int
    functions: int
    kind_counts: dict[str, int]
    function_ids: dict[str, int] = field(default_factory=dict)  # only the names asked for


def parse_btf(data: bytes, want_functions: Iterable[str] = ()) -> BtfSummary:
    """Walk every type record of `data`; return counts and the ids of the functions named in `want_functions`.

    Raises BtfError on a bad magic number, an unknown kind, or a record or name outside its section.
    """
    if len(data) < _HEADER.size:
        raise BtfError(f"{len(data)} bytes is shorter than a BTF header")
    magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(data, 0)
    if magic != BTF_MAGIC:
        raise BtfError(f"bad magic 0x{magic:04x} (BTF is 0x{BTF_MAGIC:04x}; big-endian BTF is not supported)")
    if version != 1:
        raise BtfError(f"unsupported BTF version {version}")
    types_start = hdr_len + type_off
    types_end = types_start + type_len
    strings_start = hdr_len + str_off
    strings_end = strings_start + str_len
    if hdr_len < _HEADER.size or types_end > len(data) or strings_end > len(data):
        raise BtfError(
            f"sections exceed the blob: types end at {types_end}, strings at {strings_end}, size {len(data)}"
        )
    if str_len == 0 or data[strings_end - 1] != 0:
        raise BtfError("the string section is empty or not NUL-terminated")

    wanted = {name.encode() + b"\0": name for name in want_functions}
    found: dict[str, int] = {}
    kind_counts = dict.fromkeys(range(1, 20), 0)
    unpack = _RECORD.unpack_from
    trailer = _TRAILER
    offset = types_start
    type_id = 0
    while offset < types_end:
        if offset + 12 > types_end:
            raise BtfError(f"truncated type record at byte {offset}")
        name_off, info, _size_or_type = unpack(data, offset)
        kind = (info >> 24) & 0x1F
        extra = trailer.get(kind)
        if extra is None:
            raise BtfError(f"type {type_id + 1} at byte {offset} has unknown kind {kind}")
        type_id += 1
        kind_counts[kind] += 1
        if kind == KIND_FUNC and wanted:
            if name_off >= str_len:
                raise BtfError(f"function type {type_id} names string offset {name_off} past the string section")
            for needle, name in wanted.items():
                if data.startswith(needle, strings_start + name_off):
                    found.setdefault(name, type_id)
        offset += 12 + extra[0] + extra[1] * (info & 0xFFFF)
    if offset != types_end:
        raise BtfError(f"the last type record overruns the type section by {offset - types_end} bytes")
    return BtfSummary(
        size=len(data),
        types=type_id,
        functions=kind_counts[KIND_FUNC],
        kind_counts={KIND_NAMES[k]: v for k, v in kind_counts.items() if v},
        function_ids=found,
    )


def read_vmlinux_btf(want_functions: Iterable[str] = (), path: Path = VMLINUX_BTF) -> BtfSummary:
    """Parse the running kernel's BTF. Raises OSError when unreadable, BtfError when malformed."""
    return parse_btf(path.read_bytes(), want_functions)
