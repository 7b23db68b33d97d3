"""Hand-assembled BPF instructions, for the capability probe's tiny trial programs."""

from __future__ import annotations

import struct

R0, R1, R2, R3, R4, R5, R6, R10 = 0, 1, 2, 3, 4, 5, 6, 10
PSEUDO_MAP_FD = 1


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def mov64_imm(dst: int, imm: int) -> bytes:
    return insn(0xB7, dst, imm=imm)


def mov32_imm(dst: int, imm: int) -> bytes:
    """32-bit move: zero-extends, so 0xffffffff stays 0x00000000ffffffff (BPF_F_CURRENT_CPU)."""
    return insn(0xB4, dst, imm=imm if imm < 2**31 else imm - 2**32)


def mov64_reg(dst: int, src: int) -> bytes:
    return insn(0xBF, dst, src)


def add64_imm(dst: int, imm: int) -> bytes:
    return insn(0x07, dst, imm=imm)


def store_dw_imm(dst: int, off: int, imm: int) -> bytes:
    return insn(0x7A, dst, off=off, imm=imm)


def load_map_fd(dst: int, map_fd: int) -> bytes:
    return insn(0x18, dst, PSEUDO_MAP_FD, imm=map_fd) + insn(0)


def call(helper: int) -> bytes:
    return insn(0x85, imm=helper)


def exit_insn() -> bytes:
    return insn(0x95)


RETURN_ZERO = mov64_imm(R0, 0) + exit_insn()
