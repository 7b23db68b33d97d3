"""The bpf(2) and perf_event_open(2) system calls through ctypes, for the capability probe's trials.

Only what the probe needs: load a tiny hand-assembled program, create a map, open a raw
tracepoint or BTF-based link, read a program's info, and open perf events (tracepoint,
kprobe, uprobe) to attach a program to. Every call returns a file descriptor the caller owns
(`FdScope` closes them all) or raises `BpfSyscallError` with the errno and, for program loads,
the verifier's log.

Struct layouts follow include/uapi/linux/bpf.h and perf_event.h; the kernel accepts a
zero-filled attribute larger than it knows as long as the unknown tail is zero.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import struct
from collections.abc import Sequence
from dataclasses import dataclass

# bpf commands
BPF_MAP_CREATE = 0
BPF_PROG_LOAD = 5
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_RAW_TRACEPOINT_OPEN = 17

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

# perf
PERF_TYPE_TRACEPOINT = 2
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_SET_BPF = 0x40042408
PERF_ATTR_SIZE = 112

# socket filters
SOL_SOCKET = 1
SO_ATTACH_BPF = 50

_SYSCALLS = {  # machine -> (bpf, perf_event_open)
    "x86_64": (321, 298),
    "aarch64": (280, 241),
    "ppc64le": (361, 319),
    "s390x": (351, 331),
    "riscv64": (280, 241),
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


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


def last_log_line(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    # The verifier ends with a "processed N insns" summary on success paths; the reason is before it.
    for line in reversed(lines):
        if not line.startswith(("processed ", "verification time")):
            return line
    return ""


def syscall_numbers() -> tuple[int, int]:
    machine = platform.machine()
    try:
        return _SYSCALLS[machine]
    except KeyError:
        raise BpfSyscallError(errno.ENOSYS, f"bpf syscall number unknown for machine {machine!r}") from None


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    nr_bpf, _ = syscall_numbers()
    result = _libc.syscall(ctypes.c_long(nr_bpf), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if result < 0:
        raise BpfSyscallError(ctypes.get_errno(), what)
    return int(result)


# --- instructions -----------------------------------------------------------------------------------------
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
    return _bpf(BPF_MAP_CREATE, attr, f"BPF_MAP_CREATE type {map_type}")


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
    return _bpf(BPF_PROG_LOAD, attr, f"BPF_PROG_LOAD type {prog_type}")


def raw_tracepoint_open(prog_fd: int, name: str | None) -> int:
    """Attach a raw tracepoint program to `name`, or a BTF-typed (fentry) program when name is None."""
    attr = ctypes.create_string_buffer(16)
    name_buf = ctypes.create_string_buffer(name.encode()) if name is not None else None
    struct.pack_into("<QI", attr, 0, ctypes.addressof(name_buf) if name_buf is not None else 0, prog_fd)
    return _bpf(BPF_RAW_TRACEPOINT_OPEN, attr, f"BPF_RAW_TRACEPOINT_OPEN {name or '(BTF target)'}")


def prog_jited_len(prog_fd: int) -> int:
    """Size of the program's JIT image: 0 means the interpreter runs it."""
    info = ctypes.create_string_buffer(32)  # type, id, tag[8], jited_prog_len, xlated_prog_len, ...
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("<IIQ", attr, 0, prog_fd, len(info), ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "BPF_OBJ_GET_INFO_BY_FD")
    return int(struct.unpack_from("<I", info, 16)[0])


@dataclass(frozen=True)
class PerfEventSpec:
    type: int
    config: int = 0
    config1_text: bytes | None = None  # kprobe function name or uprobe binary path
    config2: int = 0  # kprobe/uprobe offset


def perf_event_open(spec: PerfEventSpec, pid: int = -1, cpu: int = 0) -> int:
    attr = ctypes.create_string_buffer(PERF_ATTR_SIZE)
    text = ctypes.create_string_buffer(spec.config1_text) if spec.config1_text is not None else None
    struct.pack_into("<IIQQQ", attr, 0, spec.type, PERF_ATTR_SIZE, spec.config, 1, PERF_SAMPLE_RAW)
    struct.pack_into("<I", attr, 48, 1)  # wakeup_events
    struct.pack_into("<QQ", attr, 56, ctypes.addressof(text) if text is not None else 0, spec.config2)
    _, nr_perf = syscall_numbers()
    result = _libc.syscall(
        ctypes.c_long(nr_perf), attr, ctypes.c_int(pid), ctypes.c_int(cpu), ctypes.c_int(-1),
        ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC),
    )  # fmt: skip
    if result < 0:
        raise BpfSyscallError(ctypes.get_errno(), f"perf_event_open type {spec.type}")
    return int(result)


def perf_event_set_bpf(perf_fd: int, prog_fd: int) -> None:
    import fcntl

    try:
        fcntl.ioctl(perf_fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
    except OSError as exc:
        raise BpfSyscallError(exc.errno or errno.EIO, "ioctl(PERF_EVENT_IOC_SET_BPF)") from None


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
