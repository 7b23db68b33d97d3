"""Compiler output of a real BCC compile goes to `state_dir/bpf-<name>.log`; the agent's log gets one line."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from coral_ebpf.probes.runtime import load_program

WARNS = r"""
#warning "coral-ebpf test warning"
BPF_ARRAY(counter, u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    int key = 0;
    u64 *value = counter.lookup(&key);
    if (value)
        __sync_fetch_and_add(value, 1);
    return 0;
}
"""


def test_clang_warnings_go_to_the_bpf_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.INFO, logger="coral_ebpf.probes.runtime"):
        bpf = load_program("test_warns", tmp_path, text=WARNS)
        bpf.cleanup()
    records = [r for r in caplog.records if r.name == "coral_ebpf.probes.runtime"]
    assert [r.getMessage() for r in records] == ["BPF program compiled"]
    fields = records[0].fields  # type: ignore[attr-defined]
    assert fields["program"] == "test_warns" and fields["warnings"] >= 1
    assert "coral-ebpf test warning" in fields["first_warning"] or fields["warnings"] > 1
    log_path = tmp_path / "bpf-test_warns.log"
    assert fields["bpf_log"] == str(log_path)
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
    assert '"coral-ebpf test warning"' in log_path.read_text()
    assert "warning:" not in capfd.readouterr().err  # nothing raw on the agent's stderr
