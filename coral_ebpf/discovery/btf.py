"""Kernel struct member offsets read from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).

BCC compiles our probes against whatever headers tree is nearby (Debian 6.1 on a 6.18 kernel
here), so `struct sock` or `struct task_struct` from those headers has the wrong layout. The
running kernel describes its own layout in BTF; we read the few offsets the probes need and
pass them as `-D` defines to a `bpf_probe_read_kernel` chain.

The reader decodes just enough of the BTF format (kernel Documentation/bpf/btf.rst) to walk
struct and union members; it does not need libbpf.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

_BTF_MAGIC = 0xEB9F
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

# Bytes that follow the common 12-byte header, per kind: (fixed, per vlen item).
_TRAILER = {
    KIND_INT: (4, 0),
    KIND_ARRAY: (12, 0),
    KIND_STRUCT: (0, 12),
    KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8),
    KIND_FUNC_PROTO: (0, 8),
    KIND_VAR: (4, 0),
    KIND_DATASEC: (0, 12),
    KIND_DECL_TAG: (4, 0),
    KIND_ENUM64: (0, 12),
}
_QUALIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class BtfError(Exception):
    """The BTF blob is missing, malformed, or lacks a struct or member we asked for."""


@dataclass(frozen=True)
class _Type:
    kind: int
    name_off: int
    vlen: int
    kind_flag: bool
    size_or_type: int
    body: int  # offset of the kind-specific trailer in the blob


class Btf:
    """Random access to the types of one BTF blob, by id and by struct name."""

    def __init__(self, blob: bytes) -> None:
        if len(blob) < _HEADER.size:
            raise BtfError("BTF blob is shorter than its header")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(blob)
        if magic != _BTF_MAGIC:
            raise BtfError(f"not a BTF blob (magic {magic:#x})")
        self._blob = blob
        self._types_start = hdr_len + type_off
        self._types_end = self._types_start + type_len
        self._strings = blob[hdr_len + str_off : hdr_len + str_off + str_len]
        self._offsets: list[int] = [0]  # type id 0 is void
        self._index()

    @classmethod
    def load(cls, path: Path = VMLINUX_BTF) -> Btf:
        try:
            return cls(path.read_bytes())
        except OSError as exc:
            raise BtfError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def _index(self) -> None:
        blob, pos, end = self._blob, self._types_start, self._types_end
        offsets = self._offsets
        unpack = _TYPE.unpack_from
        trailer = _TRAILER
        while pos < end:
            offsets.append(pos)
            _name, info, _size = unpack(blob, pos)
            kind = (info >> 24) & 0x1F
            fixed, per_item = trailer.get(kind, (0, 0))
            pos += 12 + fixed + per_item * (info & 0xFFFF)
        if pos != end:
            raise BtfError("BTF type section is truncated")

    def _type(self, type_id: int) -> _Type:
        if not 0 < type_id < len(self._offsets):
            raise BtfError(f"BTF type id {type_id} out of range")
        pos = self._offsets[type_id]
        name_off, info, size_or_type = _TYPE.unpack_from(self._blob, pos)
        return _Type((info >> 24) & 0x1F, name_off, info & 0xFFFF, bool(info >> 31), size_or_type, pos + 12)

    def _name(self, name_off: int) -> str:
        end = self._strings.find(b"\0", name_off)
        return self._strings[name_off:end].decode("ascii", "replace")

    def _name_offset(self, name: str) -> set[int]:
        """Every offset in the string section where `name` is stored as a whole string."""
        needle = name.encode()
        found: set[int] = set()
        start = 0
        while True:
            at = self._strings.find(needle + b"\0", start)
            if at < 0:
                return found
            if at == 0 or self._strings[at - 1] == 0:
                found.add(at)
            start = at + 1

    def find_struct(self, name: str) -> int:
        """Type id of the complete struct or union called `name`."""
        wanted = self._name_offset(name)
        for type_id in range(1, len(self._offsets)):
            pos = self._offsets[type_id]
            name_off, info, _size = _TYPE.unpack_from(self._blob, pos)
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
