"""A compiled and attached tracepoint program, and the kernel's run statistics of its functions."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from coral_ebpf.probes.linux.bpf import prog_run_stats
from coral_ebpf.probes.runtime import load_program

log = logging.getLogger(__name__)


class TracepointProgram:
    """`bpf/<name>/<name>.bpf.c`, loaded; its TRACEPOINT_PROBEs attach when BCC loads it."""

    name = ""
    # tracepoint ("category:name") -> the function BCC generates for its TRACEPOINT_PROBE
    tracepoints: Mapping[str, str] = {}

    def __init__(self, state_dir: Path, defines: Mapping[str, int | str]) -> None:
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
        close_bpf(self.bpf, self.name)


def close_bpf(bpf: Any, name: str) -> None:
    """`bpf.cleanup()`, with the tracepoints detached at once first.

    Each tracepoint's detach waits for an RCU grace period in the kernel (~80 ms here: the built-in
    engine's took 1.2 s one after the other, and every agent stop waited for it). On threads (ctypes
    releases the GIL) the detaches share grace periods."""
    attached = list(bpf.tracepoint_fds)
    try:
        if len(attached) > 1:
            with ThreadPoolExecutor(len(attached), thread_name_prefix=f"{name}-detach") as pool:
                for done in [pool.submit(bpf.detach_tracepoint, tracepoint) for tracepoint in attached]:
                    if done.exception() is not None:  # cleanup() below tries that one again
                        log.debug("detaching a tracepoint failed", extra={"fields": {"error": str(done.exception())}})
    finally:
        bpf.cleanup()
