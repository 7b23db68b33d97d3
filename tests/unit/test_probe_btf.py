"""The BTF reader on hand-built blobs: ids of functions by name, and every way a blob can be malformed."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from coral_ebpf.capabilities.btf import BtfError, parse_btf, read_vmlinux_btf

INT, PTR, STRUCT, ENUM, FUNC, FUNC_PROTO, VAR, DECL_TAG = 1, 2, 4, 6, 12, 13, 14, 17


class Blob:
    """Builds a little-endian BTF blob the way pahole lays one out."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.types = bytearray()

    def name(self, text: str) -> int:
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(self, kind: int, name: str = "", vlen: int = 0, size_or_type: int = 0, trailer: bytes = b"") -> None:
        name_off = self.name(name) if name else 0
        self.types += struct.pack("<III", name_off, (kind << 24) | vlen, size_or_type) + trailer

    def build(self, magic: int = 0xEB9F, version: int = 1, string_tail: bytes | None = None) -> bytes:
        strings = bytes(self.strings) if string_tail is None else bytes(self.strings) + string_tail
        header = struct.pack("<HBBIIIII", magic, version, 0, 24, 0, len(self.types), len(self.types), len(strings))
        return header + bytes(self.types) + strings


def sample() -> Blob:
    blob = Blob()
    blob.add(INT, "int", size_or_type=4, trailer=struct.pack("<I", 32))  # id 1
    blob.add(PTR, size_or_type=1)  # id 2
    blob.add(STRUCT, "pair", vlen=2, size_or_type=8, trailer=struct.pack("<III", 0, 1, 0) * 2)  # id 3
    blob.add(FUNC_PROTO, vlen=1, size_or_type=1, trailer=struct.pack("<II", 0, 2))  # id 4
    blob.add(FUNC, "vfs_read", size_or_type=4)  # id 5
    blob.add(ENUM, "state", vlen=3, size_or_type=4, trailer=struct.pack("<Ii", 0, 1) * 3)  # id 6
    blob.add(VAR, "counter", size_or_type=1, trailer=struct.pack("<I", 1))  # id 7
    blob.add(FUNC, "do_unlinkat", size_or_type=4)  # id 8
    blob.add(DECL_TAG, "tag", size_or_type=8, trailer=struct.pack("<i", -1))  # id 9
    return blob


def test_finds_function_ids_and_counts_kinds() -> None:
    summary = parse_btf(sample().build(), ["do_unlinkat", "vfs_read", "absent_fn", "vfs"])
    assert summary.types == 9
    assert summary.functions == 2
    assert summary.function_ids == {"vfs_read": 5, "do_unlinkat": 8}  # "vfs" is not a prefix match
    assert summary.kind_counts["STRUCT"] == 1 and summary.kind_counts["FUNC"] == 2


def test_rejects_bad_magic_and_version() -> None:
    with pytest.raises(BtfError, match="bad magic"):
        parse_btf(sample().build(magic=0x9FEB))
    with pytest.raises(BtfError, match="version"):
        parse_btf(sample().build(version=2))
    with pytest.raises(BtfError, match="shorter than a BTF header"):
        parse_btf(b"\x9f\xeb")


def test_rejects_unknown_kind() -> None:
    blob = sample()
    blob.add(31, "mystery")
    with pytest.raises(BtfError, match="unknown kind 31"):
        parse_btf(blob.build())


def test_rejects_record_overrunning_its_section() -> None:
    blob = sample()
    blob.add(STRUCT, "liar", vlen=5, size_or_type=4, trailer=struct.pack("<III", 0, 1, 0))  # claims 5 members, has 1
    with pytest.raises(BtfError, match=r"overrun|truncated"):
        parse_btf(blob.build())


def test_rejects_sections_past_the_end_and_unterminated_strings() -> None:
    data = sample().build()
    with pytest.raises(BtfError, match="exceed"):
        parse_btf(data[:-4])
    with pytest.raises(BtfError, match="NUL-terminated"):
        parse_btf(sample().build(string_tail=b"dangling"))


def test_function_name_offset_outside_strings() -> None:
    blob = sample()
    blob.types += struct.pack("<III", 10_000, FUNC << 24, 4)
    with pytest.raises(BtfError, match="past the string section"):
        parse_btf(blob.build(), ["vfs_read"])


def test_read_vmlinux_btf_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(sample().build())
    assert read_vmlinux_btf(["vfs_read"], path).function_ids == {"vfs_read": 5}
    with pytest.raises(OSError):
        read_vmlinux_btf((), tmp_path / "missing")
