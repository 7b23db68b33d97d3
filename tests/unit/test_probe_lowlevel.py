"""Instruction encoding, errno wording and the ELF entry-point lookup used for the test uprobe."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from coral_ebpf.capabilities.elf import ElfError, entry_file_offset
from coral_ebpf.probes import verifier
from coral_ebpf.probes.linux import bpf as b
from coral_ebpf.probes.linux import bpf_insn as asm


def test_instruction_encoding() -> None:
    assert asm.mov64_imm(asm.R0, 0) == bytes([0xB7, 0x00, 0, 0, 0, 0, 0, 0])
    assert asm.exit_insn() == bytes([0x95, 0, 0, 0, 0, 0, 0, 0])
    assert asm.call(130) == bytes([0x85, 0, 0, 0]) + struct.pack("<i", 130)
    assert asm.mov64_reg(asm.R1, asm.R10) == bytes([0xBF, 0xA1, 0, 0, 0, 0, 0, 0])  # src in the high nibble
    assert asm.store_dw_imm(asm.R10, -8, 0) == bytes([0x7A, 0x0A]) + struct.pack("<hi", -8, 0)
    wide = asm.load_map_fd(asm.R1, 7)
    assert len(wide) == 16 and wide[:2] == bytes([0x18, 0x11]) and struct.unpack_from("<i", wide, 4)[0] == 7
    # A 32-bit move of 0xffffffff keeps the upper half zero (BPF_F_CURRENT_CPU), unlike a 64-bit one.
    move = asm.mov32_imm(asm.R3, 0xFFFFFFFF)
    assert move[0] == 0xB4 and struct.unpack_from("<i", move, 4)[0] == -1


def test_errno_wording() -> None:
    assert b.errno_name(1) == "EPERM"
    assert b.errno_name(524) == "ENOTSUPP"
    error = b.BpfSyscallError(22, "BPF_PROG_LOAD type 5", "0: (85) call unknown#999\ninvalid func unknown#999\n")
    assert error.short == "EINVAL: invalid func unknown#999"
    assert b.BpfSyscallError(1, "x").short == "EPERM (Operation not permitted)"
    assert verifier.last_log_line("R0 !read_ok\nprocessed 2 insns (limit 1000000)\n") == "R0 !read_ok"


def test_entry_offset_of_the_running_python() -> None:
    offset = entry_file_offset(Path(sys.executable).resolve())
    assert offset > 0


def test_entry_offset_maps_through_the_segment(tmp_path: Path) -> None:
    # A minimal ELF64 header with one PT_LOAD at file offset 0x1000, vaddr 0x401000, entry 0x401234.
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<QQ", header, 24, 0x401234, 64)  # e_entry, e_phoff
    struct.pack_into("<HH", header, 54, 56, 1)  # e_phentsize, e_phnum
    segment = struct.pack("<IIQQQQQQ", 1, 5, 0x1000, 0x401000, 0x401000, 0x2000, 0x2000, 0x1000)
    path = tmp_path / "tiny"
    path.write_bytes(bytes(header) + segment)
    assert entry_file_offset(path) == 0x1000 + 0x234


def test_entry_offset_errors(tmp_path: Path) -> None:
    (tmp_path / "text").write_text("#!/bin/sh\n")
    with pytest.raises(ElfError, match="not an ELF"):
        entry_file_offset(tmp_path / "text")
    elf32 = bytearray(64)
    elf32[:6] = b"\x7fELF\x01\x01"
    (tmp_path / "elf32").write_bytes(bytes(elf32))
    with pytest.raises(ElfError, match="64-bit"):
        entry_file_offset(tmp_path / "elf32")
    with pytest.raises(OSError):
        entry_file_offset(tmp_path / "missing")
