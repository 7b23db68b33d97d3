"""Trials of the bpf() basics: the syscall itself, JIT, each map type the probes use, and each helper they call.

A helper exists for a program type when the verifier accepts a program calling it, so each
helper gets its own tiny tracepoint program (the agent's probes are tracepoint programs).
Maps and programs live only inside each trial; every fd is closed before it returns.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass

from coral_ebpf.capabilities.report import Feature
from coral_ebpf.probes.linux import bpf as b
from coral_ebpf.probes.linux import bpf_insn as asm


@dataclass(frozen=True)
class MapTrial:
    map_type: int
    key_size: int
    value_size: int
    label: str  # with its article, for messages


def _ringbuf_size() -> int:
    return max(os.sysconf("SC_PAGE_SIZE"), 4096)


MAPS: dict[str, MapTrial] = {
    "map_hash": MapTrial(b.MAP_HASH, 4, 8, "a hash"),
    "map_array": MapTrial(b.MAP_ARRAY, 4, 8, "an array"),
    "map_percpu_hash": MapTrial(b.MAP_PERCPU_HASH, 4, 8, "a per-CPU hash"),
    "map_percpu_array": MapTrial(b.MAP_PERCPU_ARRAY, 4, 8, "a per-CPU array"),
    "map_lru_hash": MapTrial(b.MAP_LRU_HASH, 4, 8, "an LRU hash"),
    "map_lru_percpu_hash": MapTrial(b.MAP_LRU_PERCPU_HASH, 4, 8, "an LRU per-CPU hash"),
    "perf_event_array": MapTrial(b.MAP_PERF_EVENT_ARRAY, 4, 4, "a perf event array"),
    "ringbuf": MapTrial(b.MAP_RINGBUF, 0, 0, "a ring buffer"),
}

# The kernel release that introduced each map type, for fix hints.
MAP_SINCE = {
    "map_hash": "3.19", "map_array": "3.19", "map_percpu_hash": "4.6", "map_percpu_array": "4.6",
    "map_lru_hash": "4.10", "map_lru_percpu_hash": "4.10", "perf_event_array": "4.3", "ringbuf": "5.8",
}  # fmt: skip


def _max_entries(name: str) -> int:
    if name == "ringbuf":
        return _ringbuf_size()
    if name == "perf_event_array":
        return os.cpu_count() or 1
    return 1


def try_map(name: str, scope: b.FdScope) -> tuple[Feature, int | None]:
    """Create the map; return the feature and the fd (owned by `scope`) when it worked."""
    trial = MAPS[name]
    entries = _max_entries(name)
    try:
        fd = scope.add(b.map_create(trial.map_type, trial.key_size, trial.value_size, entries))
    except b.BpfSyscallError as exc:
        hint = (
            " (on kernels before 5.11 this usually means RLIMIT_MEMLOCK is too low)" if exc.errno == errno.EPERM else ""
        )
        return Feature(False, f"BPF_MAP_CREATE of {trial.label} map failed: {exc.short}{hint}"), None
    size = f" of {entries // 1024} KiB" if name == "ringbuf" else ""
    return Feature(True, f"created {trial.label} map{size}"), fd


def try_maps() -> dict[str, Feature]:
    """One map at a time, each closed before the next: on kernels before 5.11 every map counts against memlock."""
    found: dict[str, Feature] = {}
    for name in MAPS:
        with b.FdScope() as scope:
            found[name] = try_map(name, scope)[0]
    return found


# --- helpers ------------------------------------------------------------------------------------------------
def _simple(helper: int) -> Callable[[dict[str, int]], bytes]:
    return lambda _maps: asm.call(helper) + asm.RETURN_ZERO


def _into_stack(helper: int, size: int, with_source: bool) -> Callable[[dict[str, int]], bytes]:
    def build(_maps: dict[str, int]) -> bytes:
        code = asm.mov64_reg(asm.R1, asm.R10) + asm.add64_imm(asm.R1, -size) + asm.mov64_imm(asm.R2, size)
        if with_source:
            code += asm.mov64_imm(asm.R3, 0)
        return code + asm.call(helper) + asm.RETURN_ZERO

    return build


def _ringbuf_output(maps: dict[str, int]) -> bytes:
    return (
        asm.store_dw_imm(asm.R10, -8, 0)
        + asm.load_map_fd(asm.R1, maps["ringbuf"])
        + asm.mov64_reg(asm.R2, asm.R10)
        + asm.add64_imm(asm.R2, -8)
        + asm.mov64_imm(asm.R3, 8)
        + asm.mov64_imm(asm.R4, 0)
        + asm.call(130)
        + asm.RETURN_ZERO
    )


def _perf_event_output(maps: dict[str, int]) -> bytes:
    return (
        asm.mov64_reg(asm.R6, asm.R1)
        + asm.store_dw_imm(asm.R10, -8, 0)
        + asm.mov64_reg(asm.R1, asm.R6)
        + asm.load_map_fd(asm.R2, maps["perf_event_array"])
        + asm.mov32_imm(asm.R3, 0xFFFFFFFF)  # BPF_F_CURRENT_CPU
        + asm.mov64_reg(asm.R4, asm.R10)
        + asm.add64_imm(asm.R4, -8)
        + asm.mov64_imm(asm.R5, 8)
        + asm.call(25)
        + asm.RETURN_ZERO
    )


@dataclass(frozen=True)
class HelperTrial:
    helper_id: int
    since: str  # first kernel release with the helper, for fix hints
    build: Callable[[dict[str, int]], bytes]
    needs_map: str | None = None


HELPERS: dict[str, HelperTrial] = {
    "ktime_get_ns": HelperTrial(5, "4.1", _simple(5)),
    "get_current_pid_tgid": HelperTrial(14, "4.2", _simple(14)),
    "get_current_comm": HelperTrial(16, "4.2", _into_stack(16, 16, with_source=False)),
    "get_current_cgroup_id": HelperTrial(80, "4.18", _simple(80)),
    "probe_read_kernel": HelperTrial(113, "5.5", _into_stack(113, 8, with_source=True)),
    "probe_read_user": HelperTrial(112, "5.5", _into_stack(112, 8, with_source=True)),
    "probe_read_user_str": HelperTrial(114, "5.5", _into_stack(114, 8, with_source=True)),
    "perf_event_output": HelperTrial(25, "4.4", _perf_event_output, "perf_event_array"),
    "ringbuf_output": HelperTrial(130, "5.8", _ringbuf_output, "ringbuf"),
}


def try_helpers(names: tuple[str, ...] | None = None) -> dict[str, Feature]:
    """`helper_<name>` features: whether a tracepoint program calling bpf_<name> loads."""
    results: dict[str, Feature] = {}
    with b.FdScope() as scope:
        map_fds: dict[str, int] = {}
        map_errors: dict[str, str] = {}
        for name in names or tuple(HELPERS):
            trial = HELPERS[name]
            key = f"helper_{name}"
            if trial.needs_map and trial.needs_map not in map_fds and trial.needs_map not in map_errors:
                feature, fd = try_map(trial.needs_map, scope)
                if fd is None:
                    map_errors[trial.needs_map] = feature.detail
                else:
                    map_fds[trial.needs_map] = fd
            if trial.needs_map in map_errors:
                results[key] = Feature(False, f"not tried: its {trial.needs_map} map could not be created")
                continue
            try:
                prog = b.prog_load(b.PROG_TRACEPOINT, trial.build(map_fds), b.LoadOptions(name=f"coral_{name}"[:15]))
            except b.BpfSyscallError as exc:
                results[key] = Feature(False, f"a tracepoint program calling bpf_{name} was rejected: {exc.short}")
                continue
            os.close(prog)
            results[key] = Feature(True, f"a tracepoint program calling bpf_{name} loaded")
    return results


# --- the syscall, JIT and memory accounting ------------------------------------------------------------------
def try_bpf_syscall() -> tuple[Feature, Feature, int | None]:
    """Load a two-instruction socket filter: (bpf_syscall, jit, errno when it failed)."""
    try:
        fd = b.prog_load(b.PROG_SOCKET_FILTER, asm.RETURN_ZERO)
    except b.BpfSyscallError as exc:
        why = exc.short
        return (
            Feature(False, f"BPF_PROG_LOAD of a 2-instruction socket filter failed: {why}"),
            Feature(False, "not tried: no program could be loaded"),
            exc.errno,
        )
    try:
        try:
            jited = b.prog_jited_len(fd)
        except b.BpfSyscallError as exc:
            jit = Feature(False, f"could not read the program's info: {exc.short}")
        else:
            jit = (
                Feature(True, f"programs are JIT-compiled ({jited}-byte image for 2 instructions)")
                if jited
                else Feature(False, "programs run in the interpreter (JIT image size 0)")
            )
    finally:
        os.close(fd)
    return Feature(True, "bpf() loads programs (a socket filter loaded)"), jit, None


def try_memcg_accounting() -> Feature:
    """libbpf's test: bpf_ktime_get_coarse_ns arrived in 5.11 with memcg-based accounting of BPF memory.

    Where it loads, RLIMIT_MEMLOCK no longer limits maps and programs.
    """
    try:
        fd = b.prog_load(b.PROG_SOCKET_FILTER, asm.call(160) + asm.RETURN_ZERO)
    except b.BpfSyscallError as exc:
        return Feature(False, f"BPF memory is charged to RLIMIT_MEMLOCK (bpf_ktime_get_coarse_ns: {exc.short})")
    os.close(fd)
    return Feature(True, "BPF memory is charged to the memory cgroup; RLIMIT_MEMLOCK does not apply")
