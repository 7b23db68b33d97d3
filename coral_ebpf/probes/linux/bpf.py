"""The bpf(2) system call through ctypes: the one wrapper every caller of `bpf()` uses.

What the agent needs beside BCC: load a tiny hand-assembled program (`bpf_insn`), create a map,
open a raw tracepoint or BTF-based link, read a program's info (JIT size, run time and count),
and turn the kernel's BPF run-time statistics on. Every call returns a file descriptor the
caller owns (`FdScope` closes them all) or raises `BpfSyscallError` with the errno and, for
program loads, the verifier's log.

Struct layouts follow include/uapi/linux/bpf.h; the kernel accepts a zero-filled attribute
larger than it knows as long as the unknown tail is zero.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from coral_ebpf.probes.linux.libc import LIBC, syscall_number
from coral_ebpf.probes.verifier import last_log_line

# bpf commands
BPF_MAP_CREATE = 0
BPF_PROG_LOAD = 5
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0

# program types
PROG_SOCKET_FILTER = 1
PROG_KPROBE = 2
PROG_TRACEPOINT = 5
PROG_RAW_TRACEPOINT = 17
PROG_TRACING = 26

# map types
MAP_HASH = 1
MAP_ARRAY = 2
MAP_PERF_EVENT_ARRAY = 4
MAP_PERCPU_HASH = 5
MAP_PERCPU_ARRAY = 6
MAP_LRU_HASH = 9
MAP_LRU_PERCPU_HASH = 10
MAP_RINGBUF = 27

# attach types
BPF_TRACE_FENTRY = 24

# socket filters
SOL_SOCKET = 1
SO_ATTACH_BPF = 50

# struct bpf_prog_info: where jited_prog_len, run_time_ns and run_cnt sit
PROG_INFO_SIZE = 256
_JITED_PROG_LEN_OFFSET = 16
_RUN_TIME_NS_OFFSET = 192
_RUN_CNT_OFFSET = 200

_EXTRA_ERRNO_NAMES = {524: "ENOTSUPP"}  # kernel-internal, leaks out of bpf() for unsupported attach targets


def errno_name(err: int) -> str:
    return errno.errorcode.get(err) or _EXTRA_ERRNO_NAMES.get(err) or str(err)


def errno_text(err: int) -> str:
    return "operation not supported by this kernel" if err == 524 else os.strerror(err)


class BpfSyscallError(OSError):
    """A bpf() or perf_event_open() call failed; `log` holds the verifier output for program loads."""

    def __init__(self, err: int, what: str, log: str = "") -> None:
        super().__init__(err, f"{what}: {errno_name(err)} ({errno_text(err)})")
        self.what = what
        self.log = log

    @property
    def short(self) -> str:
        """errno name plus the verifier's last meaningful line, for one-line reports."""
        err = self.errno or 0
        last = last_log_line(self.log)
        return f"{errno_name(err)}: {last}" if last else f"{errno_name(err)} ({errno_text(err)})"


def bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    """bpf(cmd, attr, sizeof attr): its result, or BpfSyscallError naming `what`."""
    try:
        nr_bpf = syscall_number("bpf")
    except OSError as exc:
        raise BpfSyscallError(exc.errno or errno.ENOSYS, str(exc.strerror)) from None
    result = LIBC.syscall(ctypes.c_long(nr_bpf), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if result < 0:
        raise BpfSyscallError(ctypes.get_errno(), what)
    return int(result)


# --- objects ----------------------------------------------------------------------------------------------
class FdScope:
    """Owns file descriptors and closes them all (in reverse order) on exit, whatever happened."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def add(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def close(self) -> None:
        while self._fds:
            fd = self._fds.pop()
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> FdScope:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, name: str = "coral_probe") -> int:
    attr = ctypes.create_string_buffer(72)
    struct.pack_into("<IIIII", attr, 0, map_type, key_size, value_size, max_entries, 0)
    struct.pack_into("16s", attr, 28, name.encode()[:15])
    return bpf(BPF_MAP_CREATE, attr, f"BPF_MAP_CREATE type {map_type}")


@dataclass(frozen=True)
class LoadOptions:
    expected_attach_type: int = 0
    attach_btf_id: int = 0
    kern_version: int = 0
    name: str = "coral_probe"


def prog_load(prog_type: int, code: bytes | Sequence[bytes], options: LoadOptions | None = None) -> int:
    """Load a program; on failure retry once with a verifier log so the error says why."""
    options = options or LoadOptions()
    text = code if isinstance(code, bytes) else b"".join(code)
    insns = ctypes.create_string_buffer(text, len(text))
    license_text = ctypes.create_string_buffer(b"GPL")
    try:
        return _prog_load(prog_type, insns, license_text, options, None)
    except BpfSyscallError as first:
        if first.errno in (errno.EPERM, errno.E2BIG, errno.ENOSYS):
            raise
        log = ctypes.create_string_buffer(16 * 1024)
        try:
            return _prog_load(prog_type, insns, license_text, options, log)
        except BpfSyscallError as second:
            second.log = log.value.decode(errors="replace")
            raise second from None


def _prog_load(
    prog_type: int,
    insns: ctypes.Array[ctypes.c_char],
    license_text: ctypes.Array[ctypes.c_char],
    options: LoadOptions,
    log: ctypes.Array[ctypes.c_char] | None,
) -> int:
    attr = ctypes.create_string_buffer(128)
    insn_count = len(insns) // 8
    struct.pack_into("<IIQQ", attr, 0, prog_type, insn_count, ctypes.addressof(insns), ctypes.addressof(license_text))
    if log is not None:
        struct.pack_into("<IIQ", attr, 24, 1, len(log), ctypes.addressof(log))
    struct.pack_into("<I", attr, 40, options.kern_version)
    struct.pack_into("16s", attr, 48, options.name.encode()[:15])
    struct.pack_into("<I", attr, 68, options.expected_attach_type)
    struct.pack_into("<I", attr, 108, options.attach_btf_id)
    return bpf(BPF_PROG_LOAD, attr, f"BPF_PROG_LOAD type {prog_type}")


def raw_tracepoint_open(prog_fd: int, name: str | None) -> int:
    """Attach a raw tracepoint program to `name`, or a BTF-typed (fentry) program when name is None."""
    attr = ctypes.create_string_buffer(16)
    name_buf = ctypes.create_string_buffer(name.encode()) if name is not None else None
    struct.pack_into("<QI", attr, 0, ctypes.addressof(name_buf) if name_buf is not None else 0, prog_fd)
    return bpf(BPF_RAW_TRACEPOINT_OPEN, attr, f"BPF_RAW_TRACEPOINT_OPEN {name or '(BTF target)'}")


def _prog_info(prog_fd: int) -> bytes:
    info = ctypes.create_string_buffer(PROG_INFO_SIZE)
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("<IIQ", attr, 0, prog_fd, len(info), ctypes.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "BPF_OBJ_GET_INFO_BY_FD")
    return info.raw


def prog_jited_len(prog_fd: int) -> int:
    """Size of the program's JIT image: 0 means the interpreter runs it."""
    return int(struct.unpack_from("<I", _prog_info(prog_fd), _JITED_PROG_LEN_OFFSET)[0])


def prog_run_stats(prog_fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a loaded program: 0s while the kernel's statistics are off."""
    info = _prog_info(prog_fd)
    return (
        int(struct.unpack_from("<Q", info, _RUN_TIME_NS_OFFSET)[0]),
        int(struct.unpack_from("<Q", info, _RUN_CNT_OFFSET)[0]),
    )


def enable_stats() -> int:
    """BPF_ENABLE_STATS(run time): statistics stay on while the returned fd is open (kernel >= 5.8)."""
    attr = ctypes.create_string_buffer(4)
    struct.pack_into("<I", attr, 0, BPF_STATS_RUN_TIME)
    return bpf(BPF_ENABLE_STATS, attr, "BPF_ENABLE_STATS")


def kernel_version_code(release: str, version: str) -> int:
    """LINUX_VERSION_CODE as old kernels check it for kprobe programs (ignored since 5.0).

    Debian's release strings hide the real sublevel (`4.19.0-27-amd64`), which `uname -v` holds
    (`#1 SMP Debian 4.19.316-1`), the way libbpf reads it.
    """
    source = release
    if "Debian " in version:
        source = version.split("Debian ", 1)[1]
    parts = [int(p) for p in _leading_numbers(source)]
    while len(parts) < 3:
        parts.append(0)
    major, minor, patch = parts[:3]
    return (major << 16) + (minor << 8) + min(patch, 255)


def _leading_numbers(text: str) -> list[str]:
    head = text.split("-", 1)[0].split("+", 1)[0]
    return [p for p in head.split(".")[:3] if p.isdigit()]
