"""A small reader of BTF, the kernel's own type description (`/sys/kernel/btf/vmlinux`).

Two parts of the agent need it:
- the capability probe proves the blob parses and finds function ids (fentry programs are
  loaded against the BTF id of the function they attach to);
- discovery reads struct member offsets: BCC compiles against whatever headers tree is nearby
  (Debian 6.1 on a 6.18 kernel, say), so `struct sock` from those headers has the wrong
  layout, while the running kernel describes its own layout here.

BTF (include/uapi/linux/btf.h, Documentation/bpf/btf.rst) is a header, a type section and a
string section; type ids are the 1-based position of each type record, so the reader walks
every record once, checking each record's kind and bounds (which is what "parses" means in
the probe's report), and keeps an index for random access. No libbpf needed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
_TYPE = struct.Struct("<III")  # name_off, info, size_or_type
_MEMBER = struct.Struct("<III")  # name_off, type, offset

KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19
KIND_NAMES = {
    1: "INT", 2: "PTR", 3: "ARRAY", 4: "STRUCT", 5: "UNION", 6: "ENUM", 7: "FWD", 8: "TYPEDEF",
    9: "VOLATILE", 10: "CONST", 11: "RESTRICT", 12: "FUNC", 13: "FUNC_PROTO", 14: "VAR",
    15: "DATASEC", 16: "FLOAT", 17: "DECL_TAG", 18: "TYPE_TAG", 19: "ENUM64",
}  # fmt: skip

# Bytes that follow the 12-byte common record, per kind: (fixed extra, bytes per vlen member).
_TRAILER = {
    1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0), 8: (0, 0),
    9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0), 15: (0, 12), 16: (0, 0),
    17: (4, 0), 18: (0, 0), 19: (0, 12),
}  # fmt: skip
_QUALIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class BtfError(ValueError):
    """The BTF blob is missing, malformed (or not BTF at all), or lacks a struct or member asked for."""


@dataclass(frozen=True)
class BtfSummary:
    """What a full walk of a BTF blob found."""

    size: int
    types: int
    functions: int
    kind_counts: dict[str, int]
    function_ids: dict[str, int] = field(default_factory=dict)  # only the names asked for


@dataclass(frozen=True)
class _Type:
    kind: int
    name_off: int
    vlen: int
    kind_flag: bool
    size_or_type: int
    body: int  # offset of the kind-specific trailer in the blob


class Btf:
    """One BTF blob, checked and indexed: types by id, structs by name, member offsets, function ids."""

    def __init__(self, blob: bytes) -> None:
        if len(blob) < _HEADER.size:
            raise BtfError(f"{len(blob)} bytes is shorter than a BTF header")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(blob, 0)
        if magic != BTF_MAGIC:
            raise BtfError(f"bad magic 0x{magic:04x} (BTF is 0x{BTF_MAGIC:04x}; big-endian BTF is not supported)")
        if version != 1:
            raise BtfError(f"unsupported BTF version {version}")
        self._blob = blob
        self._types_start = hdr_len + type_off
        self._types_end = self._types_start + type_len
        strings_start = hdr_len + str_off
        strings_end = strings_start + str_len
        if hdr_len < _HEADER.size or self._types_end > len(blob) or strings_end > len(blob):
            raise BtfError(
                f"sections exceed the blob: types end at {self._types_end}, strings at {strings_end}, size {len(blob)}"
            )
        if str_len == 0 or blob[strings_end - 1] != 0:
            raise BtfError("the string section is empty or not NUL-terminated")
        self._strings = blob[strings_start:strings_end]
        self._offsets: list[int] = [0]  # type id 0 is void
        self._kind_counts = dict.fromkeys(range(1, 20), 0)
        self._index()

    @classmethod
    def load(cls, path: Path = VMLINUX_BTF) -> Btf:
        """The BTF at `path`. Raises BtfError when it is unreadable or malformed."""
        try:
            return cls(path.read_bytes())
        except OSError as exc:
            raise BtfError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def _index(self) -> None:
        blob, offset, end = self._blob, self._types_start, self._types_end
        offsets, counts, unpack, trailer = self._offsets, self._kind_counts, _TYPE.unpack_from, _TRAILER
        while offset < end:
            if offset + 12 > end:
                raise BtfError(f"truncated type record at byte {offset}")
            _name, info, _size = unpack(blob, offset)
            kind = (info >> 24) & 0x1F
            extra = trailer.get(kind)
            if extra is None:
                raise BtfError(f"type {len(offsets)} at byte {offset} has unknown kind {kind}")
            offsets.append(offset)
            counts[kind] += 1
            offset += 12 + extra[0] + extra[1] * (info & 0xFFFF)
        if offset != end:
            raise BtfError(f"the last type record overruns the type section by {offset - end} bytes (truncated)")

    @property
    def type_count(self) -> int:
        return len(self._offsets) - 1

    def summary(self, want_functions: Iterable[str] = ()) -> BtfSummary:
        """Counts per kind, and the ids of the functions named in `want_functions` (exact names)."""
        return BtfSummary(
            size=len(self._blob),
            types=self.type_count,
            functions=self._kind_counts[KIND_FUNC],
            kind_counts={KIND_NAMES[k]: v for k, v in self._kind_counts.items() if v},
            function_ids=self.function_ids(want_functions),
        )

    def function_ids(self, names: Iterable[str]) -> dict[str, int]:
        wanted = {name: self._name_offsets(name) for name in names}
        found: dict[str, int] = {}
        if not wanted:
            return found
        for type_id, record in enumerate(self._offsets[1:], start=1):
            name_off, info, _size = _TYPE.unpack_from(self._blob, record)
            if (info >> 24) & 0x1F != KIND_FUNC:
                continue
            if name_off >= len(self._strings):
                raise BtfError(f"function type {type_id} names string offset {name_off} past the string section")
            for name, offsets in wanted.items():
                if name_off in offsets:
                    found.setdefault(name, type_id)
        return found

    def _type(self, type_id: int) -> _Type:
        if not 0 < type_id < len(self._offsets):
            raise BtfError(f"BTF type id {type_id} out of range")
        pos = self._offsets[type_id]
        name_off, info, size_or_type = _TYPE.unpack_from(self._blob, pos)
        return _Type((info >> 24) & 0x1F, name_off, info & 0xFFFF, bool(info >> 31), size_or_type, pos + 12)

    def _name(self, name_off: int) -> str:
        end = self._strings.find(b"\0", name_off)
        return self._strings[name_off:end].decode("ascii", "replace")

    def _name_offsets(self, name: str) -> set[int]:
        """Every offset in the string section where `name` is stored as a whole string."""
        needle = name.encode() + b"\0"
        found: set[int] = set()
        start = 0
        while True:
            at = self._strings.find(needle, start)
            if at < 0:
                return found
            if at == 0 or self._strings[at - 1] == 0:
                found.add(at)
            start = at + 1

    def find_struct(self, name: str) -> int:
        """Type id of the complete struct or union called `name`."""
        wanted = self._name_offsets(name)
        for type_id in range(1, len(self._offsets)):
            name_off, info, _size = _TYPE.unpack_from(self._blob, self._offsets[type_id])
            if name_off in wanted and (info >> 24) & 0x1F in (KIND_STRUCT, KIND_UNION):
                return type_id
        raise BtfError(f"struct {name} is not in the kernel's BTF")

    def _strip(self, type_id: int) -> _Type:
        """Follow typedefs and qualifiers to the underlying type."""
        found = self._type(type_id)
        hops = 0
        while found.kind in _QUALIFIERS:
            found = self._type(found.size_or_type)
            hops += 1
            if hops > 32:
                raise BtfError(f"BTF qualifier chain too long at type {type_id}")
        return found

    def _members(self, found: _Type) -> list[tuple[str, int, int]]:
        """(name, type id, bit offset) of each member of a struct or union."""
        out = []
        for index in range(found.vlen):
            name_off, member_type, offset = _MEMBER.unpack_from(self._blob, found.body + index * 12)
            bit_offset = offset & 0xFFFFFF if found.kind_flag else offset
            out.append((self._name(name_off), member_type, bit_offset))
        return out

    def _find_member(self, found: _Type, name: str) -> tuple[int, int] | None:
        """(type id, bit offset) of `name`, looking inside anonymous struct/union members too."""
        for member_name, member_type, bit_offset in self._members(found):
            if member_name == name:
                return member_type, bit_offset
            if member_name == "":
                inner = self._strip(member_type)
                if inner.kind in (KIND_STRUCT, KIND_UNION):
                    nested = self._find_member(inner, name)
                    if nested is not None:
                        return nested[0], bit_offset + nested[1]
        return None

    def offset_of(self, struct_name: str, path: Sequence[str]) -> int:
        """Byte offset of `struct_name.path[0].path[1]...` (members by value, not through pointers)."""
        current = self._strip(self.find_struct(struct_name))
        total_bits = 0
        walked = struct_name
        for member in path:
            if current.kind not in (KIND_STRUCT, KIND_UNION):
                raise BtfError(f"{walked} is not a struct or union, cannot take .{member}")
            hit = self._find_member(current, member)
            if hit is None:
                raise BtfError(f"struct member {walked}.{member} is not in the kernel's BTF")
            member_type, bit_offset = hit
            total_bits += bit_offset
            walked = f"{walked}.{member}"
            current = self._strip(member_type)
        if total_bits % 8:
            raise BtfError(f"{walked} is a bit field")
        return total_bits // 8


def parse_btf(data: bytes, want_functions: Iterable[str] = ()) -> BtfSummary:
    """Walk every type record of `data`; counts and the ids of the functions named in `want_functions`.

    Raises BtfError on a bad magic number, an unknown kind, or a record or name outside its section.
    """
    return Btf(data).summary(want_functions)


def read_vmlinux_btf(want_functions: Iterable[str] = (), path: Path = VMLINUX_BTF) -> BtfSummary:
    """Parse the running kernel's BTF. Raises OSError when unreadable, BtfError when malformed."""
    return parse_btf(path.read_bytes(), want_functions)
