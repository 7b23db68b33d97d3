"""Trials of each way the agent and Beyla attach programs: load a minimal program and attach it for real.

- tracepoint: perf_event_open on a tracefs tracepoint id + PERF_EVENT_IOC_SET_BPF
- raw tracepoint: BPF_RAW_TRACEPOINT_OPEN
- kprobe: the kprobe PMU (`/sys/bus/event_source/devices/kprobe`), else a tracefs `kprobe_events` entry
- uprobe: the uprobe PMU on the Python executable's entry point, else `uprobe_events`
- fentry: a BTF-typed tracing program on a kernel function found in vmlinux BTF
- socket filter: SO_ATTACH_BPF on an AF_PACKET socket (how Beyla's network mode watches packets)

Programs return 0 and are detached as soon as the attach succeeded. PMU-based probes vanish
with their fd; a tracefs entry this module adds is removed in a `finally`, even on error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from coral_ebpf.capabilities.elf import ElfError, entry_file_offset
from coral_ebpf.capabilities.report import Feature
from coral_ebpf.probes.linux import bpf as b
from coral_ebpf.probes.linux import bpf_insn as asm
from coral_ebpf.probes.linux import perf_event as perf

EVENT_SOURCES = Path("/sys/bus/event_source/devices")
TRACEFS_GROUP = "coral_probe"

# Tracepoints the agent's own probes attach to (discovery; the built-in HTTP RED probe).
DISCOVERY_TRACEPOINTS = ("sched/sched_process_exec", "sched/sched_process_exit", "sock/inet_sock_set_state")
RED_SYSCALLS = ("accept", "accept4", "read", "recvfrom", "readv", "write", "sendto", "writev", "close")
RED_TRACEPOINTS = tuple(f"syscalls/sys_{edge}_{name}" for name in RED_SYSCALLS for edge in ("enter", "exit"))

# Kernel functions to try fentry on, most stable first; the first one present in BTF is used.
FENTRY_CANDIDATES = ("vfs_read", "do_unlinkat", "tcp_v4_connect")

_ARCH_SYSCALL_PREFIX = {"x86_64": "__x64_", "aarch64": "__arm64_", "s390x": "__s390x_", "riscv64": "__riscv_"}


def syscall_symbols(name: str) -> tuple[str, ...]:
    """Kernel symbols for syscall `name`, as cilium/ebpf resolves `kprobe/sys_<name>` (Beyla's watcher)."""
    prefix = _ARCH_SYSCALL_PREFIX.get(platform.machine())
    return (f"{prefix}sys_{name}", f"sys_{name}") if prefix else (f"sys_{name}",)


def tracepoint_id(tracefs: Path, name: str) -> int | None:
    try:
        return int((tracefs / "events" / name / "id").read_text().strip())
    except (OSError, ValueError):
        return None


def _attach_to_perf_event(spec: perf.PerfEventSpec, prog_fd: int) -> None:
    with b.FdScope() as scope:
        perf_fd = scope.add(perf.perf_event_open(spec))
        perf.perf_event_set_bpf(perf_fd, prog_fd)


def _load(prog_type: int, options: b.LoadOptions | None = None) -> int:
    return b.prog_load(prog_type, asm.RETURN_ZERO, options)


def try_tracepoint(tracefs: Path | None, name: str = "sched/sched_process_exec") -> Feature:
    if tracefs is None:
        return Feature(False, "not tried: tracefs is not mounted and could not be mounted")
    tp_id = tracepoint_id(tracefs, name)
    if tp_id is None:
        return Feature(False, f"tracepoint {name} not found under {tracefs}/events")
    try:
        with b.FdScope() as scope:
            prog = scope.add(_load(b.PROG_TRACEPOINT))
            _attach_to_perf_event(perf.PerfEventSpec(perf.PERF_TYPE_TRACEPOINT, config=tp_id), prog)
    except b.BpfSyscallError as exc:
        return Feature(False, f"{exc.what} for tracepoint {name}: {exc.short}")
    return Feature(True, f"attached a tracepoint program to {name.replace('/', ':')}")


def try_tracepoint_set(tracefs: Path | None, names: tuple[str, ...], attach: str) -> Feature:
    """All of `names` exist in tracefs, and a program attaches to `attach` (one of them)."""
    if tracefs is None:
        return Feature(False, "not tried: tracefs is not mounted and could not be mounted")
    missing = [name for name in names if tracepoint_id(tracefs, name) is None]
    if missing:
        shown = ", ".join(m.replace("/", ":") for m in missing)
        return Feature(False, f"missing tracepoints: {shown} (not under {tracefs}/events)")
    attached = try_tracepoint(tracefs, attach)
    if not attached.available:
        return attached
    return Feature(True, f"all {len(names)} tracepoints present; {attached.detail}")


def try_raw_tracepoint(name: str = "sched_process_exec") -> Feature:
    try:
        with b.FdScope() as scope:
            prog = scope.add(_load(b.PROG_RAW_TRACEPOINT))
            scope.add(b.raw_tracepoint_open(prog, name))
    except b.BpfSyscallError as exc:
        return Feature(False, f"{exc.what}: {exc.short}")
    return Feature(True, f"attached a raw tracepoint program to {name}")


def try_fentry(function_ids: dict[str, int], btf_problem: str = "") -> Feature:
    target = next(((name, function_ids[name]) for name in FENTRY_CANDIDATES if name in function_ids), None)
    if target is None:
        why = btf_problem or f"none of {', '.join(FENTRY_CANDIDATES)} is in vmlinux BTF"
        return Feature(False, f"not tried: {why}")
    name, btf_id = target
    options = b.LoadOptions(expected_attach_type=b.BPF_TRACE_FENTRY, attach_btf_id=btf_id, name="coral_fentry")
    try:
        with b.FdScope() as scope:
            prog = scope.add(_load(b.PROG_TRACING, options))
            scope.add(b.raw_tracepoint_open(prog, None))
    except b.BpfSyscallError as exc:
        why = ""
        if exc.errno == errno.EPERM and "PROG_LOAD" in exc.what:
            why = " (the kernel refuses BTF tracing programs; bpftool feature probe shows 'program_type tracing')"
        return Feature(False, f"fentry on {name} (BTF id {btf_id}): {exc.what}: {exc.short}{why}")
    return Feature(True, f"attached an fentry program to {name} (BTF id {btf_id})")


def try_socket_filter() -> Feature:
    """Beyla's network mode attaches a socket filter to an AF_PACKET socket; protocol 0 receives no packets."""
    try:
        with b.FdScope() as scope:
            prog = scope.add(_load(b.PROG_SOCKET_FILTER))
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
                sock.setsockopt(b.SOL_SOCKET, b.SO_ATTACH_BPF, prog)
    except b.BpfSyscallError as exc:
        return Feature(False, f"{exc.what}: {exc.short}")
    except OSError as exc:
        return Feature(False, f"AF_PACKET socket filter: {exc.strerror or exc}")
    return Feature(True, "attached a socket filter to an AF_PACKET socket")


# --- kprobes and uprobes ---------------------------------------------------------------------------------------
def pmu_type(name: str, sources: Path = EVENT_SOURCES) -> int | None:
    try:
        return int((sources / name / "type").read_text().strip())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def tracefs_probe_event(tracefs: Path, control: str, definition: str) -> Iterator[int]:
    """Add `p:coral_probe/<unique> <definition>` to tracefs `control`, yield its tracepoint id, remove it."""
    event = f"p{os.getpid()}_{threading.get_native_id()}"
    control_file = tracefs / control
    _append(control_file, f"p:{TRACEFS_GROUP}/{event} {definition}\n")
    try:
        tp_id = tracepoint_id(tracefs, f"{TRACEFS_GROUP}/{event}")
        if tp_id is None:
            raise OSError(f"{control} accepted the probe but {TRACEFS_GROUP}/{event} has no id")
        yield tp_id
    finally:
        _append(control_file, f"-:{TRACEFS_GROUP}/{event}\n")


def _append(control_file: Path, line: str) -> None:
    """One write(2) with O_APPEND: without it (or with O_TRUNC) the kernel drops every existing probe."""
    fd = os.open(control_file, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _kprobe_options(release: str, version: str) -> b.LoadOptions:
    return b.LoadOptions(kern_version=b.kernel_version_code(release, version), name="coral_kprobe")


def try_kprobe(tracefs: Path | None, syscall: str = "bind") -> Feature:
    """Attach a kprobe program to the kernel's `sys_<syscall>` (the function Beyla's process watcher uses)."""
    uname = platform.uname()
    symbols = syscall_symbols(syscall)
    kprobe_pmu = pmu_type("kprobe")
    events_file = tracefs / "kprobe_events" if tracefs is not None else None
    has_events_file = events_file is not None and events_file.exists()
    if kprobe_pmu is None and not has_events_file:
        where = f"{tracefs}/kprobe_events" if tracefs is not None else "kprobe_events (tracefs not mounted)"
        return Feature(
            False,
            f"no kprobe PMU ({EVENT_SOURCES}/kprobe) and no {where}: "
            "this kernel has no kprobes (built without CONFIG_KPROBES)",
        )
    errors: list[str] = []
    try:
        with b.FdScope() as scope:
            prog = scope.add(_load(b.PROG_KPROBE, _kprobe_options(uname.release, uname.version)))
            for symbol in symbols:
                if kprobe_pmu is not None:
                    try:
                        _attach_to_perf_event(perf.PerfEventSpec(kprobe_pmu, config1_text=symbol.encode()), prog)
                        return Feature(True, f"attached a kprobe program to {symbol} through the kprobe PMU")
                    except b.BpfSyscallError as exc:
                        errors.append(f"{symbol} via PMU: {exc.short}")
                if has_events_file and tracefs is not None:
                    try:
                        with tracefs_probe_event(tracefs, "kprobe_events", symbol) as tp_id:
                            _attach_to_perf_event(perf.PerfEventSpec(perf.PERF_TYPE_TRACEPOINT, config=tp_id), prog)
                        return Feature(True, f"attached a kprobe program to {symbol} through kprobe_events")
                    except OSError as exc:
                        errors.append(f"{symbol} via kprobe_events: {_os_error_text(exc)}")
    except b.BpfSyscallError as exc:
        return Feature(False, f"a kprobe program did not load: {exc.short}")
    return Feature(False, "kprobe attach failed: " + "; ".join(errors))


def uprobe_target() -> tuple[Path, int]:
    """The running Python executable and the file offset of its entry point."""
    exe = Path(os.path.realpath(sys.executable or "/proc/self/exe"))
    return exe, entry_file_offset(exe)


def try_uprobe(tracefs: Path | None) -> Feature:
    try:
        binary, offset = uprobe_target()
    except (OSError, ElfError) as exc:
        return Feature(False, f"not tried: no uprobe target ({exc})")
    uprobe_pmu = pmu_type("uprobe")
    events_file = tracefs / "uprobe_events" if tracefs is not None else None
    has_events_file = events_file is not None and events_file.exists()
    if uprobe_pmu is None and not has_events_file:
        return Feature(False, f"no uprobe PMU ({EVENT_SOURCES}/uprobe) and no uprobe_events in tracefs")
    uname = platform.uname()
    where = f"{binary}+0x{offset:x} (entry point)"
    try:
        with b.FdScope() as scope:
            prog = scope.add(_load(b.PROG_KPROBE, _kprobe_options(uname.release, uname.version)))
            if uprobe_pmu is not None:
                spec = perf.PerfEventSpec(uprobe_pmu, config1_text=str(binary).encode(), config2=offset)
                _attach_to_perf_event(spec, prog)
                return Feature(True, f"attached a uprobe program to {where} through the uprobe PMU")
            assert tracefs is not None
            with tracefs_probe_event(tracefs, "uprobe_events", f"{binary}:0x{offset:x}") as tp_id:
                _attach_to_perf_event(perf.PerfEventSpec(perf.PERF_TYPE_TRACEPOINT, config=tp_id), prog)
            return Feature(True, f"attached a uprobe program to {where} through uprobe_events")
    except b.BpfSyscallError as exc:
        return Feature(False, f"uprobe on {where}: {exc.what}: {exc.short}")
    except OSError as exc:
        return Feature(False, f"uprobe on {where} via uprobe_events: {_os_error_text(exc)}")


def _os_error_text(exc: OSError) -> str:
    if isinstance(exc, b.BpfSyscallError):
        return f"{exc.what}: {exc.short}"
    return exc.strerror or str(exc)
