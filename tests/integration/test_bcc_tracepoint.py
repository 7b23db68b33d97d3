"""BCC end to end on the running kernel: compile, load, attach a syscall tracepoint, trigger it.

This also proves, on every kernel of `make vm-test`, that the guest's kernel headers are found
(BCC compiles against them) and that tracefs is reachable.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path

import pytest

from coral_ebpf.probes.runtime import BpfCompileError, load_program

# Its outcome depends on the kernel: the VM suites (make vm-test, make vagrant-test) run it.
pytestmark = pytest.mark.kernel

BIND_COUNTER = r"""
BPF_HASH(bind_calls, u32, u64);

TRACEPOINT_PROBE(syscalls, sys_enter_bind) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (tgid != TARGET_TGID)
        return 0;
    bind_calls.increment(tgid);
    return 0;
}
"""


def _bind_loopback(times: int) -> None:
    for _ in range(times):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))


def test_syscall_tracepoint_counts_this_process_binds(tmp_path: Path) -> None:
    bpf = load_program("test_bind_counter", tmp_path, defines={"TARGET_TGID": os.getpid()}, text=BIND_COUNTER)
    try:
        # The probe is attached by TRACEPOINT_PROBE at load time; only our own binds count.
        _bind_loopback(3)
        counts = {key.value: value.value for key, value in bpf[b"bind_calls"].items()}
    finally:
        bpf.cleanup()
    assert counts == {os.getpid(): 3}, f"kernel {platform.release()}: unexpected bind counts {counts}"


def test_tracepoint_ignores_other_processes(tmp_path: Path) -> None:
    other_tgid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process can have it
    bpf = load_program("test_bind_counter", tmp_path, defines={"TARGET_TGID": other_tgid}, text=BIND_COUNTER)
    try:
        _bind_loopback(2)
        counts = {key.value: value.value for key, value in bpf[b"bind_calls"].items()}
    finally:
        bpf.cleanup()
    assert counts == {}


# Reads a map value at an offset the verifier cannot bound: every kernel rejects it.
UNBOUNDED_READ = r"""
BPF_ARRAY(values, u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_bind) {
    int zero = 0;
    u64 *value = values.lookup(&zero);
    if (!value)
        return 0;
    u32 offset = bpf_get_prandom_u32();
    return *(value + offset);
}
"""


def test_a_rejected_program_quotes_the_verifier_and_keeps_its_log(tmp_path: Path) -> None:
    with pytest.raises(BpfCompileError) as caught:
        load_program("test_unbounded_read", tmp_path, text=UNBOUNDED_READ)
    message = caught.value.message
    assert "the verifier said:" in message
    verdict = message.split("the verifier said:", 1)[1]
    assert "invalid" in verdict or "outside" in verdict or "unbounded" in verdict, message
    log = tmp_path / "bpf-test_unbounded_read.log"
    assert str(log) in caught.value.hint
    assert (log.stat().st_mode & 0o777) == 0o600
    assert "processed " in log.read_text()  # the verifier's whole log is kept there


def test_a_compile_error_quotes_clang(tmp_path: Path) -> None:
    with pytest.raises(BpfCompileError) as caught:
        load_program("test_syntax", tmp_path, text="int broken(void *ctx) { return undeclared_name; }")
    assert "clang said:" in caught.value.message and "undeclared_name" in caught.value.message
