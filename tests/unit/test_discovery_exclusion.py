"""What discovery leaves out: the agent, Beyla/OBI, and `discovery.exclude` globs."""

from __future__ import annotations

import pytest

from coral_ebpf.discovery.exclusion import Exclusion
from coral_ebpf.probes.linux.procfs import ProcessInfo


def proc(pid: int = 500, exe: str = "/usr/bin/api", comm: str = "api", name: str = "api") -> ProcessInfo:
    return ProcessInfo(pid, 1, comm, exe, (exe,), name, "/", None)


def test_the_agent_itself() -> None:
    assert Exclusion([], agent_pids={42}).reason(proc(pid=42)) == "the agent itself"
    assert Exclusion([]).reason(proc(pid=500)) is None


@pytest.mark.parametrize("exe", ["/usr/local/bin/beyla", "/opt/obi/obi"])
def test_beyla_and_obi(exe: str) -> None:
    assert Exclusion([], agent_pids=()).reason(proc(exe=exe)) == "beyla"


def test_the_configured_beyla_binary_whatever_its_name() -> None:
    exclusion = Exclusion([], agent_pids=(), beyla_paths=["/opt/vendor/bin/ebpf-instrumenter-3.35"])
    assert exclusion.reason(proc(exe="/opt/vendor/bin/ebpf-instrumenter-3.35")) == "beyla"
    assert exclusion.reason(proc(exe="", comm="ebpf-instrument")) == "beyla"  # comm: the first 15 bytes
    assert exclusion.reason_for_comm(77, "ebpf-instrument") == "beyla"
    assert exclusion.reason(proc(exe="/opt/vendor/bin/other")) is None


def test_beyla_by_task_name_when_the_executable_is_unreadable() -> None:
    assert Exclusion([], agent_pids=()).reason(proc(exe="", comm="beyla")) == "beyla"
    assert Exclusion([], agent_pids=()).reason(proc(exe="/usr/bin/beyla-wrapper", comm="beyla")) is None


@pytest.mark.parametrize(
    ("pattern", "process"),
    [
        ("/opt/internal/*", proc(exe="/opt/internal/tools/metrics")),  # full path, '*' crosses '/'
        ("postgres*", proc(exe="/usr/lib/postgresql/15/bin/postgres")),  # executable file name
        ("kworker*", proc(exe="", comm="kworker/0:1")),  # task name
        ("*-sidecar", proc(name="mesh-sidecar")),  # service name
        ("api", proc()),
    ],
)
def test_patterns_match_path_name_comm_or_service(pattern: str, process: ProcessInfo) -> None:
    reason = Exclusion([pattern], agent_pids=()).reason(process)
    assert reason == f"matches discovery.exclude pattern {pattern!r}"


def test_patterns_are_case_sensitive_and_whole_value() -> None:
    exclusion = Exclusion(["API", "ap"], agent_pids=())
    assert exclusion.reason(proc()) is None


def test_reason_for_comm_when_only_the_task_name_is_known() -> None:
    exclusion = Exclusion(["batch-*"], agent_pids={7})
    assert exclusion.reason_for_comm(7, "x") == "the agent itself"
    assert exclusion.reason_for_comm(8, "obi") == "beyla"
    assert exclusion.reason_for_comm(8, "batch-job") is not None
    assert exclusion.reason_for_comm(8, "web") is None
