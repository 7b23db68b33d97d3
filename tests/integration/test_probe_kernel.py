"""The capability probe on the running kernel: its answers must match what the kernel really has.

"Really has" is learned independently: the kernel's build config (/boot/config-*, /proc/config.gz)
and bpftool's own feature probe. No expectation is hard-coded per host, so the same tests hold on
this machine (no kprobes, no BTF tracing programs) and on Debian's kernels in VMs (kprobes).
"""

from __future__ import annotations

import errno
import os
import resource
import threading
from pathlib import Path

import pytest

from coral_ebpf.capabilities import trials_attach as attach
from coral_ebpf.capabilities import trials_maps
from coral_ebpf.capabilities.kernel_probe import memlock_raised, probe
from coral_ebpf.capabilities.report import ProbeReport
from coral_ebpf.probes.linux import bpf as b
from coral_ebpf.probes.linux import bpf_insn as asm
from coral_ebpf.probes.linux import perf_event as perf
from coral_ebpf.probes.linux.mount import ensure_tracefs
from tests.helpers.kernel_truth import KernelConfig, bpftool_features, kernel_config, kernel_numbers

# Its outcome depends on the kernel: the VM suites (make vm-test, make vagrant-test) run it.
pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ProbeReport:
    return probe(tmp_path_factory.mktemp("probe-state"))


def config_or_skip() -> KernelConfig:
    config = kernel_config()
    if isinstance(config, str):
        pytest.skip(f"cannot check this against the kernel config: {config}")
    return config


def bpftool_or_skip() -> dict[str, object]:
    features = bpftool_features()
    if isinstance(features, str):
        pytest.skip(f"cannot compare with bpftool: {features}")
    return features


def test_probe_is_complete_as_root(report: ProbeReport) -> None:
    assert report.complete
    assert report.feature("bpf_syscall")
    assert report.duration_ms > 0  # reported; no threshold (the machine is shared)


def test_kprobes_match_the_kernel_config(report: ProbeReport) -> None:
    config = config_or_skip()
    kprobe = report.features["kprobe"]
    if config.enabled("CONFIG_KPROBES"):
        assert kprobe.available, kprobe.detail
        assert "sys_bind" in kprobe.detail
    else:
        assert not kprobe.available
        assert "kprobe" in kprobe.detail.lower()


def test_beyla_application_needs_kprobes(report: ProbeReport) -> None:
    config = config_or_skip()
    verdict = report.verdict("beyla_application")
    if not config.enabled("CONFIG_KPROBES"):
        assert not verdict.ok
        assert "kprobe" in verdict.reason.lower()
        assert "CONFIG_KPROBES" in verdict.fix
    elif config.enabled("CONFIG_DEBUG_INFO_BTF") and kernel_numbers() >= (5, 8):
        assert verdict.ok, verdict


def test_btf_matches_the_kernel_config(report: ProbeReport) -> None:
    config = config_or_skip()
    assert report.feature("btf") is config.enabled("CONFIG_DEBUG_INFO_BTF")
    if report.feature("btf"):
        assert report.context["btf"]["types"] > 1000


def test_tracepoints_match_the_kernel_config(report: ProbeReport) -> None:
    config = config_or_skip()
    assert report.feature("tracepoint") is config.enabled("CONFIG_TRACEPOINTS")
    assert report.feature("discovery_tracepoints") is config.enabled("CONFIG_TRACEPOINTS")
    assert report.feature("syscall_tracepoints") is config.enabled("CONFIG_FTRACE_SYSCALLS")


def test_uprobes_match_the_kernel_config(report: ProbeReport) -> None:
    config = config_or_skip()
    assert report.feature("uprobe") is config.enabled("CONFIG_UPROBE_EVENTS"), report.features["uprobe"].detail


def test_program_and_map_types_match_bpftool(report: ProbeReport) -> None:
    bpftool = bpftool_or_skip()
    programs = bpftool["program_types"]
    maps = bpftool["map_types"]
    assert isinstance(programs, dict) and isinstance(maps, dict)
    assert report.feature("raw_tracepoint") is programs["have_raw_tracepoint_prog_type"]
    assert report.feature("fentry") is programs.get("have_tracing_prog_type", False), report.features["fentry"]
    for feature, bpftool_name in {
        "ringbuf": "have_ringbuf_map_type",
        "perf_event_array": "have_perf_event_array_map_type",
        "map_hash": "have_hash_map_type",
        "map_lru_hash": "have_lru_hash_map_type",
        "map_percpu_array": "have_percpu_array_map_type",
        "map_percpu_hash": "have_percpu_hash_map_type",
    }.items():
        assert report.feature(feature) is maps.get(bpftool_name, False), (feature, report.features[feature])


def test_helpers_match_bpftool(report: ProbeReport) -> None:
    bpftool = bpftool_or_skip()
    helpers = bpftool["helpers"]
    assert isinstance(helpers, dict)
    available = set(helpers.get("tracepoint_available_helpers", []))
    for name in trials_maps.HELPERS:
        assert report.feature(f"helper_{name}") is (f"bpf_{name}" in available), report.features[f"helper_{name}"]


def test_ring_buffer_agrees_with_kernel_version_without_bpftool(report: ProbeReport) -> None:
    # Ring buffers have no config switch: every kernel from 5.8 has them (RHEL 8 backported them to 4.18).
    if kernel_numbers() >= (5, 8):
        assert report.feature("ringbuf") and report.feature("helper_ringbuf_output")


def test_bcc_compiles_with_the_resolved_headers(report: ProbeReport) -> None:
    assert report.feature("bcc_import"), report.features["bcc_import"].detail
    assert report.feature("kernel_headers"), report.features["kernel_headers"].detail
    assert report.feature("bcc_compile"), report.features["bcc_compile"].detail
    assert report.verdict("bcc_discovery").ok, report.verdict("bcc_discovery")
    assert report.context["kernel_headers"] == report.features["kernel_headers"].detail


def test_red_bcc_follows_syscall_tracepoints(report: ProbeReport) -> None:
    assert report.verdict("red_bcc").ok is report.feature("syscall_tracepoints")


def test_nothing_is_left_behind(tmp_path: Path) -> None:
    tracefs, _ = ensure_tracefs()
    probe(tmp_path)  # first call: one-time imports (BCC) happen here
    fds = _kernel_object_fds()
    threads = threading.active_count()
    controls = {name: _read(tracefs / name) for name in ("kprobe_events", "uprobe_events")}
    for _ in range(2):
        again = probe(tmp_path)
        assert again.complete
    assert _kernel_object_fds() == fds
    assert threading.active_count() == threads
    for name, before in controls.items():
        after = _read(tracefs / name)
        assert after == before, f"{name} changed"
        assert attach.TRACEFS_GROUP not in (after or "")
    assert not (tracefs / "events" / attach.TRACEFS_GROUP).exists()


def _kernel_object_fds() -> list[str]:
    """What this process holds open of BPF programs, maps, links, perf events and tracefs.

    Only those: other fds of the test process come and go with the garbage collector and
    earlier tests' threads, and are not the probe's.
    """
    targets = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("anon_inode:") or "/tracing" in target or "/sys/kernel/debug" in target:
            targets.append(target)
    return sorted(targets)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _tracefs_definition(control: str) -> str:
    if control == "kprobe_events":
        return attach.syscall_symbols("bind")[0]
    binary, offset = attach.uprobe_target()
    return f"{binary}:0x{offset:x}"


@pytest.mark.parametrize("control", ["kprobe_events", "uprobe_events"])
def test_tracefs_probe_events_are_removed_even_on_error(control: str) -> None:
    tracefs, _ = ensure_tracefs()
    if not (tracefs / control).exists():
        pytest.skip(f"{tracefs}/{control} does not exist on this kernel")
    definition = _tracefs_definition(control)
    with attach.tracefs_probe_event(tracefs, control, definition) as tp_id:
        assert tp_id > 0
        assert attach.TRACEFS_GROUP in (tracefs / control).read_text()
        with b.FdScope() as scope:  # the event really takes a BPF program
            prog = scope.add(b.prog_load(b.PROG_KPROBE, asm.RETURN_ZERO))
            perf_fd = scope.add(perf.perf_event_open(perf.PerfEventSpec(perf.PERF_TYPE_TRACEPOINT, config=tp_id)))
            perf.perf_event_set_bpf(perf_fd, prog)
    assert attach.TRACEFS_GROUP not in (tracefs / control).read_text()
    with pytest.raises(RuntimeError), attach.tracefs_probe_event(tracefs, control, definition):
        raise RuntimeError("a failure inside the trial")
    assert attach.TRACEFS_GROUP not in (tracefs / control).read_text()


def test_a_missing_helper_is_reported_with_the_verifiers_words(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = trials_maps.HelperTrial(100_000, "99.0", lambda _maps: asm.call(100_000) + asm.RETURN_ZERO)
    monkeypatch.setitem(trials_maps.HELPERS, "no_such_helper", fake)
    found = trials_maps.try_helpers(("no_such_helper", "ktime_get_ns"))
    assert found["helper_ktime_get_ns"].available
    missing = found["helper_no_such_helper"]
    assert not missing.available
    assert "EINVAL" in missing.detail and "func" in missing.detail  # e.g. "invalid func unknown#100000"


def test_bpf_errors_carry_errno() -> None:
    with pytest.raises(b.BpfSyscallError) as info:
        b.map_create(b.MAP_RINGBUF, 0, 0, 4097)  # not a power-of-two number of pages
    assert info.value.errno == errno.EINVAL


def test_memlock_is_lifted_for_the_trials_and_put_back() -> None:
    """Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; the probe lifts it like BCC does, then restores it."""
    original = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    low = 64 * 1024
    hard = original[1]
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (low, hard))
        notes: list[str] = []
        with memlock_raised(True, notes):
            soft = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
            assert soft == resource.RLIM_INFINITY or soft > low
            feature, fd = trials_maps.try_map("ringbuf", b.FdScope())
            assert feature.available is (kernel_numbers() >= (5, 8))
            if fd is not None:
                os.close(fd)
        assert resource.getrlimit(resource.RLIMIT_MEMLOCK) == (low, hard)
        assert notes and "RLIMIT_MEMLOCK" in notes[0]
        with memlock_raised(False, notes):  # not needed (memcg accounting): left alone
            assert resource.getrlimit(resource.RLIMIT_MEMLOCK) == (low, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, original)
