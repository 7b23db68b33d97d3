"""The BTF reader: struct member offsets from a hand-built blob, and from the running kernel."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from coral_ebpf.discovery.btf import KIND_INT, KIND_STRUCT, KIND_TYPEDEF, KIND_UNION, VMLINUX_BTF, Btf, BtfError
from coral_ebpf.discovery.kernel_layout import read_layout


class BlobBuilder:
    def __init__(self) -> None:
        self.strings = b"\0"
        self.types = b""

    def name(self, text: str) -> int:
        if not text:
            return 0
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(self, kind: int, name: str, size_or_type: int, vlen: int = 0, kind_flag: bool = False) -> None:
        info = (kind << 24) | vlen | (1 << 31 if kind_flag else 0)
        self.types += struct.pack("<III", self.name(name), info, size_or_type)

    def member(self, name: str, type_id: int, offset: int) -> None:
        self.types += struct.pack("<III", self.name(name), type_id, offset)

    def blob(self) -> bytes:
        header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        return header + self.types + self.strings


def sample() -> Btf:
    b = BlobBuilder()
    b.add(KIND_INT, "int", 4)  # 1
    b.types += struct.pack("<I", 32)
    b.add(KIND_STRUCT, "inner", 8, vlen=2)  # 2
    b.member("a", 1, 0)
    b.member("b", 1, 32)
    b.add(KIND_UNION, "", 8, vlen=2)  # 3: anonymous
    b.member("x", 1, 0)
    b.member("nested", 2, 0)
    b.add(KIND_TYPEDEF, "inner_t", 2)  # 4
    b.add(KIND_STRUCT, "outer", 24, vlen=3)  # 5
    b.member("head", 1, 0)
    b.member("", 3, 64)
    b.member("tail", 4, 128)
    b.add(KIND_STRUCT, "bits", 4, vlen=2, kind_flag=True)  # 6
    b.member("f1", 1, (3 << 24) | 0)
    b.member("f2", 1, (5 << 24) | 3)
    return Btf(b.blob())


def test_offsets_through_anonymous_unions_and_typedefs() -> None:
    btf = sample()
    assert btf.offset_of("outer", ["head"]) == 0
    assert btf.offset_of("outer", ["x"]) == 8
    assert btf.offset_of("outer", ["nested", "b"]) == 12
    assert btf.offset_of("outer", ["tail", "b"]) == 20


def test_errors_name_what_is_missing() -> None:
    btf = sample()
    with pytest.raises(BtfError, match=r"outer\.nope"):
        btf.offset_of("outer", ["nope"])
    with pytest.raises(BtfError, match="struct missing is not"):
        btf.offset_of("missing", ["a"])
    with pytest.raises(BtfError, match="bit field"):
        btf.offset_of("bits", ["f2"])
    with pytest.raises(BtfError, match="not a struct"):
        btf.offset_of("outer", ["head", "deeper"])


def test_rejects_what_is_not_btf() -> None:
    with pytest.raises(BtfError, match="magic"):
        Btf(b"\0" * 64)
    with pytest.raises(BtfError, match="shorter"):
        Btf(b"\x9f\xeb")
    good = BlobBuilder()
    good.add(KIND_STRUCT, "s", 4, vlen=2)
    good.member("only_one", 1, 0)  # the second member is missing
    with pytest.raises(BtfError, match="truncated"):
        Btf(good.blob())


def test_missing_btf_file_falls_back(tmp_path: Path) -> None:
    layout = read_layout(tmp_path / "absent")
    assert not layout.netns_from_kernel and not layout.inode_from_kernel
    assert layout.defines() == {"NETNS_FROM_KERNEL": 0, "INODE_FROM_KERNEL": 0}
    assert "cannot read" in layout.problem
    assert read_layout(None).problem == "BTF use disabled"


@pytest.mark.skipif(not VMLINUX_BTF.exists() or shutil.which("bpftool") is None, reason="needs kernel BTF and bpftool")
def test_running_kernel_offsets_match_bpftool() -> None:
    layout = read_layout()
    assert layout.netns_from_kernel and layout.inode_from_kernel, layout.problem
    dump = subprocess.run(
        ["bpftool", "-j", "btf", "dump", "file", str(VMLINUX_BTF)], capture_output=True, text=True, check=True
    )
    types = json.loads(dump.stdout)["types"]

    def member_offset(struct_name: str, member: str) -> int:
        for item in types:
            if item["kind"] == "STRUCT" and item["name"] == struct_name:
                for found in item["members"]:
                    if found["name"] == member:
                        return int(found["bits_offset"]) // 8
        raise AssertionError(f"{struct_name}.{member} not in bpftool's dump")

    assert layout.task_nsproxy == member_offset("task_struct", "nsproxy")
    assert layout.nsproxy_net == member_offset("nsproxy", "net_ns")
    assert layout.net_inum == member_offset("net", "ns") + member_offset("ns_common", "inum")
    assert layout.sock_socket == member_offset("sock", "sk_socket")
    assert layout.inode_ino == member_offset("inode", "i_ino")
    assert layout.sock_net == member_offset("sock_common", "skc_net")  # sock starts with sock_common
