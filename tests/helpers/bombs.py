"""A gzip bomb: 1 GiB of zeros in about 1 MB, built in well under a second.

Compressing 1 GiB takes ~15 s here, so one 16 MiB segment is compressed once, ended with a
full flush (byte-aligned, no back-references past it) and repeated; the stream is one valid
gzip member whose trailer carries the real CRC-32 and size of the 1 GiB it inflates to.
"""

from __future__ import annotations

import functools
import struct
import zlib

SEGMENT = 16 * 1024 * 1024


@functools.cache
def gzip_bomb(inflated_size: int = 1 << 30) -> bytes:
    if inflated_size % SEGMENT:
        raise ValueError(f"inflated_size must be a multiple of {SEGMENT}")
    zeros = bytes(SEGMENT)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    segment = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    final_block = compressor.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(inflated_size // SEGMENT):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, inflated_size & 0xFFFFFFFF)
    return header + segment * (inflated_size // SEGMENT) + final_block + trailer
