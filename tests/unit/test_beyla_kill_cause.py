"""Telling the OOM killer from an outside SIGKILL: kernel log parsing and the resulting diagnosis."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from coral_ebpf.beyla.diagnosis import diagnose_exit
from coral_ebpf.beyla.kill_cause import KillEvidence, gather, kmsg_messages, oom_line_for_pid, read_kernel_log

# Lines as Linux 6.x prints them when the OOM killer picks a process.
OOM_SUMMARY = (
    "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
    "task_memcg=/system.slice/coral-ebpf.service,task=beyla,pid=4242,uid=0"
)
OOM_KILLED = (
    "Out of memory: Killed process 4242 (beyla) total-vm:1906340kB, anon-rss:812344kB, file-rss:0kB, "
    "shmem-rss:0kB, UID:0 pgtables:2052kB oom_score_adj:0"
)
CGROUP_KILLED = "Memory cgroup out of memory: Killed process 4243 (beyla) total-vm:1906340kB, anon-rss:262144kB"


def test_the_oom_line_must_name_the_pid() -> None:
    assert oom_line_for_pid([OOM_KILLED], 4242) == OOM_KILLED
    assert oom_line_for_pid([OOM_SUMMARY], 4242) == OOM_SUMMARY
    assert oom_line_for_pid([CGROUP_KILLED], 4243) == CGROUP_KILLED
    assert oom_line_for_pid([OOM_KILLED, CGROUP_KILLED], 424) is None
    assert oom_line_for_pid(["Killed process 42420 (other)"], 4242) is None


def test_kmsg_records_are_split_into_messages() -> None:
    records = [b"3,1001,5000,-;" + OOM_KILLED.encode() + b"\n SUBSYSTEM=memory\n", b"6,1002,5001,-;hello\n", b"junk"]
    assert kmsg_messages(records) == [OOM_KILLED, "hello"]


def test_an_unreadable_kernel_log_is_none(tmp_path: Path) -> None:
    assert read_kernel_log(tmp_path / "absent") is None
    evidence = gather(4242, None, tmp_path / "absent")
    assert evidence == KillEvidence(None, False, None) and not evidence.conclusive


def test_the_real_kernel_log_has_no_oom_kill_of_this_process() -> None:
    if os.geteuid() != 0 or read_kernel_log() is None:
        pytest.skip("the kernel log is readable only by root")
    evidence = gather(os.getpid(), None)
    assert evidence.kernel_log_readable and evidence.kernel_oom_line is None and not evidence.oom


def test_an_outside_sigkill_is_not_called_oom() -> None:
    evidence = KillEvidence(cgroup_oom_kills=None, kernel_log_readable=True, kernel_oom_line=None)
    diagnosis = diagnose_exit(-signal.SIGKILL, None, kill=evidence)
    assert diagnosis.kind == "killed"
    assert diagnosis.message == (
        "Beyla was killed by SIGKILL from outside the agent, not by the OOM killer "
        "(no OOM kill of Beyla in the kernel log)"
    )
    assert "OOM" not in diagnosis.fix
    # With a memory limit whose cgroup counted no OOM kill, still from outside.
    limited = diagnose_exit(-signal.SIGKILL, None, memory_limit=1 << 28, kill=KillEvidence(0, False, None))
    assert limited.kind == "killed" and "cgroup memory.events oom_kill 0" in limited.message


def test_the_oom_killer_is_named_with_its_evidence() -> None:
    machine = diagnose_exit(-signal.SIGKILL, None, kill=KillEvidence(None, True, OOM_KILLED))
    assert machine.kind == "oom_killed" and machine.line == OOM_KILLED and "kernel's OOM killer" in machine.message
    limited = diagnose_exit(-signal.SIGKILL, None, memory_limit=1 << 28, kill=KillEvidence(1, True, None))
    assert limited.kind == "memory_limit" and "cgroup memory.events oom_kill 1" in limited.message


def test_without_any_readable_record_it_says_so() -> None:
    unknown = diagnose_exit(-signal.SIGKILL, None, kill=KillEvidence(None, False, None))
    assert unknown.kind == "killed" and "no OOM record could be read" in unknown.message
    # A memory limit but nothing readable: the limit is the likely cause, and the message says "most likely".
    likely = diagnose_exit(-signal.SIGKILL, None, memory_limit=1 << 28, kill=KillEvidence(None, False, None))
    assert likely.kind == "memory_limit" and "most likely" in likely.message


def test_other_signals_are_from_outside() -> None:
    assert diagnose_exit(-signal.SIGTERM, None).message == "Beyla was killed by SIGTERM from outside the agent"
