"""What the two discovery probes share: compiling with the right defines, buffer mode, run statistics."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coral_ebpf.bcc_runtime import load_program
from coral_ebpf.discovery.bpf_stats import prog_run_stats
from coral_ebpf.discovery.buffers import BufferMode
from coral_ebpf.discovery.kernel_layout import KernelLayout

log = logging.getLogger(__name__)


class DiscoveryProgram:
    """One compiled and attached `bpf/<name>.bpf.c`; its tracepoints attach when BCC loads it."""

    name = ""
    # tracepoint ("category:name") -> the BCC function BCC generates for TRACEPOINT_PROBE
    tracepoints: Mapping[str, str] = {}

    def __init__(
        self,
        state_dir: Path,
        layout: KernelLayout,
        mode: BufferMode,
        pages: int,
        extra_defines: Mapping[str, int] | None = None,
    ) -> None:
        defines: dict[str, int | str] = dict(layout.defines())
        defines["USE_RINGBUF"] = 1 if mode == "ring_buffer" else 0
        # Ring buffer: one buffer of `pages` pages. Perf buffer: the map itself needs no size.
        defines["BUFFER_PAGES"] = pages
        defines.update(extra_defines or {})
        self.mode: BufferMode = mode
        self.pages = pages
        self.bpf: Any = load_program(self.name, state_dir, defines=defines)

    def run_stats(self) -> dict[str, dict[str, float]]:
        """Per tracepoint: runs, total run time, and mean ns per run (0s while statistics are off)."""
        out: dict[str, dict[str, float]] = {}
        for tracepoint, function in self.tracepoints.items():
            loaded = self.bpf.funcs.get(function.encode())
            if loaded is None:
                continue
            try:
                run_time_ns, run_cnt = prog_run_stats(loaded.fd)
            except OSError as exc:
                log.debug("cannot read BPF program info", extra={"fields": {"error": str(exc)}})
                continue
            out[tracepoint] = {
                "run_cnt": run_cnt,
                "run_time_ns": run_time_ns,
                "avg_ns": round(run_time_ns / run_cnt, 1) if run_cnt else 0.0,
            }
        return out

    def close(self) -> None:
        self.bpf.cleanup()
