"""`storage:` section: the DuckDB file, retention, the write queue and DuckDB's memory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral_ebpf.config.formats import DURATION, PATH, SIZE, section
from coral_ebpf.units import parse_duration, parse_size

SCHEMA = section(
    {
        "path": {**PATH, "description": "DuckDB file; default <state_dir>/coral-ebpf.duckdb"},
        "retention": {**DURATION, "description": "How long rows are kept (default 1h)"},
        "cleanup_interval": {**DURATION, "description": "How often expired rows are deleted (default 1m)"},
        "queue_max_batches": {"type": "integer", "minimum": 1, "description": "Bounded write queue length"},
        "flush_interval": {**DURATION, "description": "Longest time an accepted batch waits before it is written"},
        "memory_limit": {
            **SIZE,
            "description": "DuckDB's memory limit, part of limits.memory; larger queries spill to disk (default 96MiB)",
        },
        "spool_max_bytes": {
            **SIZE,
            "description": "Most bytes the write-ahead spool holds before requests are refused (429); 0 turns "
            "the spool off, so an acknowledged batch is only in memory until written (default 256MiB)",
        },
    },
    "DuckDB storage",
)

MIN_MEMORY_LIMIT = 32 * 1024 * 1024
MIN_SPOOL_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class StorageSettings:
    path: Path
    retention: float = 3600.0
    cleanup_interval: float = 60.0
    queue_max_batches: int = 256
    # Bigger writes cost DuckDB less per row (a write that fills a 122,880-row group skips the
    # WAL); a second is invisible next to Beyla's own 5-60 s export intervals.
    flush_interval: float = 1.0
    # DuckDB's default is 80% of RAM; an agent should leave the host's memory to its services.
    # DuckDB's share of the agent's limits.memory (256 MiB): 96 MiB for DuckDB, ~100 MiB for
    # the agent itself, the rest for data in flight.
    memory_limit: int = 96 * 1024 * 1024
    # Acknowledged, not yet in the database: what a sender can push while the writer lags or
    # the database cannot write. 0 turns the spool off.
    spool_max_bytes: int = 256 * 1024 * 1024
    # Where the spool's segments live; None: a `spool` directory beside the database file.
    spool_dir: Path | None = None

    @property
    def spool_directory(self) -> Path:
        return self.spool_dir if self.spool_dir is not None else self.path.parent / "spool"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], state_dir: Path) -> StorageSettings:
        defaults = cls(path=state_dir / "coral-ebpf.duckdb")
        settings = cls(
            path=Path(data["path"]) if "path" in data else defaults.path,
            retention=parse_duration(data.get("retention", defaults.retention)),
            cleanup_interval=parse_duration(data.get("cleanup_interval", defaults.cleanup_interval)),
            queue_max_batches=int(data.get("queue_max_batches", defaults.queue_max_batches)),
            flush_interval=parse_duration(data.get("flush_interval", defaults.flush_interval)),
            memory_limit=parse_size(data.get("memory_limit", defaults.memory_limit)),
            spool_max_bytes=parse_size(data.get("spool_max_bytes", defaults.spool_max_bytes)),
            spool_dir=state_dir / "spool",
        )
        if settings.retention <= 0:
            raise ValueError("storage.retention must be greater than 0 (e.g. 1h)")
        if settings.cleanup_interval < 1:
            raise ValueError("storage.cleanup_interval must be at least 1s (e.g. 1m)")
        if settings.memory_limit < MIN_MEMORY_LIMIT:
            raise ValueError("storage.memory_limit must be at least 32MiB (e.g. 256MiB)")
        if 0 < settings.spool_max_bytes < MIN_SPOOL_BYTES:
            raise ValueError("storage.spool_max_bytes must be 0 (no spool) or at least 16MiB (e.g. 256MiB)")
        return settings
