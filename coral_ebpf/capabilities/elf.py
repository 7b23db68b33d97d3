"""Where to put a test uprobe: the file offset of an executable's ELF entry point.

The entry point exists in every executable (static or dynamic, stripped or not) and runs once,
at process start, so a uprobe there costs nothing to processes already running. uprobes take a
file offset, not a virtual address, so the entry address is mapped back through the PT_LOAD
segment that contains it.
"""

from __future__ import annotations

import struct
from pathlib import Path

PT_LOAD = 1


class ElfError(ValueError):
    pass


def entry_file_offset(path: Path) -> int:
    """File offset of `path`'s entry point. Raises ElfError (not ELF64 little-endian, no segment) or OSError."""
    with path.open("rb") as handle:
        header = handle.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF":
            raise ElfError(f"{path} is not an ELF file")
        if header[4] != 2 or header[5] != 1:
            raise ElfError(f"{path} is not a 64-bit little-endian ELF file")
        entry, phoff = struct.unpack_from("<QQ", header, 24)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        if phentsize < 56 or phnum == 0:
            raise ElfError(f"{path} has no program headers")
        handle.seek(phoff)
        table = handle.read(phentsize * phnum)
    for index in range(phnum):
        base = index * phentsize
        if base + 56 > len(table):
            break
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", table, base)
        if p_type == PT_LOAD and p_vaddr <= entry < p_vaddr + p_filesz:
            return int(entry - p_vaddr + p_offset)
    raise ElfError(f"{path}: no loadable segment holds the entry point 0x{entry:x}")
