"""`Batch`: rows for one or more tables, and its spool encoding (Arrow IPC streams).

A record in the spool is one batch: a count of tables, then for each its name and one Arrow
IPC stream. Arrow's own format keeps every type (dictionaries, lists, timestamps) exactly, and
writing it is a copy of the column buffers, not a conversion.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pyarrow as pa

from coral_ebpf.storage.schema import TABLES

_COUNT = struct.Struct("<H")
_ENTRY = struct.Struct("<HQ")  # name length, stream length


class BatchDecodeError(ValueError):
    """A spool record whose checksum matched but whose content is not a batch (a bug, or another version)."""


@dataclass(frozen=True)
class Batch:
    """Rows for one or more tables, accepted or refused as a whole."""

    tables: dict[str, pa.Table]
    rows: int = field(init=False)
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        for name in self.tables:
            if name not in TABLES:
                raise ValueError(f"unknown table {name!r}")
        object.__setattr__(self, "rows", sum(t.num_rows for t in self.tables.values()))
        object.__setattr__(self, "nbytes", sum(t.nbytes for t in self.tables.values()))


def encode_batch(batch: Batch) -> bytes:
    parts = [_COUNT.pack(len(batch.tables))]
    for name, table in batch.tables.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        stream = sink.getvalue()
        encoded_name = name.encode()
        parts += [_ENTRY.pack(len(encoded_name), stream.size), encoded_name, stream.to_pybytes()]
    return b"".join(parts)


def decode_batch(payload: bytes) -> Batch:
    try:
        (count,) = _COUNT.unpack_from(payload, 0)
        offset = _COUNT.size
        tables: dict[str, pa.Table] = {}
        for _ in range(count):
            name_length, stream_length = _ENTRY.unpack_from(payload, offset)
            offset += _ENTRY.size
            name = payload[offset : offset + name_length].decode()
            offset += name_length
            buffer = pa.py_buffer(payload)[offset : offset + stream_length]
            offset += stream_length
            tables[name] = pa.ipc.open_stream(buffer).read_all()
        return Batch(tables)
    except (struct.error, UnicodeDecodeError, pa.ArrowException, ValueError) as exc:
        raise BatchDecodeError(f"spool record is not a batch: {exc}") from exc
