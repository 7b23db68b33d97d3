"""Verdict logic on synthetic feature sets: kernels and privileges this machine does not have."""

from __future__ import annotations

import pytest

from coral_ebpf.capabilities.context import CAPABILITIES, Capabilities, KernelInfo, OsRelease, version_tuple
from coral_ebpf.capabilities.kernel_probe import BCC_FEATURES, FEATURE_ORDER
from coral_ebpf.capabilities.report import Feature, ProbeComponent, ProbeReport
from coral_ebpf.capabilities.trials_maps import HELPERS
from coral_ebpf.capabilities.verdicts import Facts, judge

ALL_CAPS = Capabilities(sum(1 << bit for bit in CAPABILITIES.values()))
ALL_FEATURES = (*FEATURE_ORDER, *BCC_FEATURES, *(f"helper_{name}" for name in HELPERS))


def kernel(release: str, os_id: str = "debian", version_id: str = "12", rhel8: bool = False) -> KernelInfo:
    return KernelInfo(
        release=release,
        version="#1 SMP",
        machine="x86_64",
        numbers=version_tuple(release),
        os_release=OsRelease(id=os_id, version_id=version_id),
        rhel8=rhel8,
    )


def facts(
    release: str = "6.1.0-56-amd64",
    missing: tuple[str, ...] = (),
    caps: Capabilities = ALL_CAPS,
    **extra: object,
) -> Facts:
    features = {
        name: Feature(name not in missing, f"{name} {'missing in test' if name in missing else 'ok'}")
        for name in ALL_FEATURES
    }
    kernel_info = extra.pop("kernel", None) or kernel(release)
    return Facts(kernel=kernel_info, features=features, capabilities=caps, **extra)  # type: ignore[arg-type]


def caps_of(*names: str) -> Capabilities:
    return Capabilities(sum(1 << CAPABILITIES[name] for name in names))


def test_everything_present_everything_ok() -> None:
    verdicts = judge(facts())
    assert set(verdicts) == set(ProbeComponent)
    for name, verdict in verdicts.items():
        assert verdict.ok, (name, verdict)
        assert verdict.reason and verdict.fix == ""


def test_this_machine_no_kprobes() -> None:
    verdicts = judge(facts("6.18.44-fc", missing=("kprobe", "fentry")))
    app = verdicts[ProbeComponent.BEYLA_APPLICATION]
    assert not app.ok
    assert "kprobe" in app.reason and "sys_bind" in app.reason
    assert "CONFIG_KPROBES" in app.fix and "red.engine" in app.fix
    for name in (
        ProbeComponent.AGENT_PROBES,
        ProbeComponent.BCC_DISCOVERY,
        ProbeComponent.RED_BCC,
        ProbeComponent.BEYLA_NETWORK,
    ):
        assert verdicts[name].ok, name


def test_ubuntu_5_4_without_ring_buffers() -> None:
    missing = ("ringbuf", "helper_ringbuf_output", "helper_probe_read_user", "helper_probe_read_user_str",
               "helper_probe_read_kernel", "memcg_accounting")  # fmt: skip
    verdicts = judge(facts(kernel=kernel("5.4.0-150-generic", "ubuntu", "20.04"), missing=missing))
    discovery = verdicts[ProbeComponent.BCC_DISCOVERY]
    assert discovery.ok and "perf buffer" in discovery.reason  # falls back, and says so
    assert not verdicts[ProbeComponent.RED_BCC].ok and "bpf_probe_read_user" in verdicts[ProbeComponent.RED_BCC].reason
    assert "5.5" in verdicts[ProbeComponent.RED_BCC].fix
    app = verdicts[ProbeComponent.BEYLA_APPLICATION]
    assert not app.ok
    assert "older than 5.8" in app.reason and "ring buffers" in app.reason
    assert "5.8" in app.fix
    assert not verdicts[ProbeComponent.BEYLA_NETWORK].ok


def test_rhel8_4_18_is_accepted_when_it_has_ring_buffers() -> None:
    rhel = kernel("4.18.0-553.el8_10.x86_64", "rhel", "8.10", rhel8=True)
    verdicts = judge(facts(kernel=rhel))
    assert verdicts[ProbeComponent.BEYLA_APPLICATION].ok, verdicts[ProbeComponent.BEYLA_APPLICATION]
    assert verdicts[ProbeComponent.BEYLA_NETWORK].ok
    early = judge(facts(kernel=kernel("4.18.0-240.el8.x86_64", "rhel", "8.3", rhel8=True), missing=("ringbuf",)))
    assert (
        not early[ProbeComponent.BEYLA_APPLICATION].ok
        and "ring buffers" in early[ProbeComponent.BEYLA_APPLICATION].reason
    )
    assert "older than 5.8" not in early[ProbeComponent.BEYLA_APPLICATION].reason


def test_plain_4_18_is_too_old_for_beyla() -> None:
    verdicts = judge(facts(kernel=kernel("4.18.0-25-generic", "ubuntu", "18.10")))
    assert (
        not verdicts[ProbeComponent.BEYLA_APPLICATION].ok
        and "older than 5.8" in verdicts[ProbeComponent.BEYLA_APPLICATION].reason
    )


def test_no_btf() -> None:
    verdicts = judge(facts(missing=("btf", "fentry")))
    for name in (ProbeComponent.BEYLA_APPLICATION, ProbeComponent.BEYLA_NETWORK):
        assert not verdicts[name].ok and "BTF" in verdicts[name].reason
        assert "CONFIG_DEBUG_INFO_BTF" in verdicts[name].fix
    assert verdicts[ProbeComponent.BCC_DISCOVERY].ok and verdicts[ProbeComponent.RED_BCC].ok
    with_file = judge(facts(missing=("btf",), btf_fallback="/boot/vmlinux-6.1.0-56-amd64"))
    assert with_file[ProbeComponent.BEYLA_APPLICATION].ok  # Beyla (libbpf) reads BTF from the vmlinux file


def test_capabilities_without_root() -> None:
    app_caps = ("CAP_BPF", "CAP_PERFMON", "CAP_CHECKPOINT_RESTORE", "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE",
                "CAP_NET_RAW")  # fmt: skip
    assert judge(facts(caps=caps_of(*app_caps)))[ProbeComponent.BEYLA_APPLICATION].ok
    verdicts = judge(facts(caps=caps_of(*app_caps[:-2])))
    assert not verdicts[ProbeComponent.BEYLA_APPLICATION].ok
    assert "CAP_SYS_PTRACE" in verdicts[ProbeComponent.BEYLA_APPLICATION].reason
    assert "CAP_NET_RAW" in verdicts[ProbeComponent.BEYLA_APPLICATION].reason
    # Network mode: CAP_PERFMON + CAP_NET_ADMIN (tc) is an alternative to CAP_NET_RAW.
    assert judge(facts(caps=caps_of("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN")))[ProbeComponent.BEYLA_NETWORK].ok
    assert not judge(facts(caps=caps_of("CAP_BPF", "CAP_PERFMON")))[ProbeComponent.BEYLA_NETWORK].ok


def test_cap_sys_resource_only_matters_before_5_11() -> None:
    caps = caps_of("CAP_BPF", "CAP_PERFMON", "CAP_NET_RAW")
    old = judge(facts(kernel=kernel("5.10.0-46-amd64"), caps=caps))[ProbeComponent.BEYLA_NETWORK]
    assert not old.ok and "CAP_SYS_RESOURCE" in old.reason
    assert judge(facts(kernel=kernel("5.15.0-1"), caps=caps))[ProbeComponent.BEYLA_NETWORK].ok


def test_perf_event_paranoid_above_2_needs_sys_admin() -> None:
    caps = caps_of("CAP_BPF", "CAP_PERFMON", "CAP_CHECKPOINT_RESTORE", "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE",
                   "CAP_NET_RAW")  # fmt: skip
    verdict = judge(facts(caps=caps, perf_event_paranoid=3))[ProbeComponent.BEYLA_APPLICATION]
    assert not verdict.ok and "perf_event_paranoid" in verdict.reason
    assert judge(facts(caps=ALL_CAPS, perf_event_paranoid=3))[ProbeComponent.BEYLA_APPLICATION].ok


def test_bcc_missing_blocks_only_the_bcc_components() -> None:
    verdicts = judge(
        facts(missing=("bcc_import", "bcc_compile"), hints={"bcc_import": "apt-get install python3-bpfcc"})
    )
    for name in (ProbeComponent.BCC_DISCOVERY, ProbeComponent.RED_BCC):
        assert not verdicts[name].ok and "BCC" in verdicts[name].reason
        assert "python3-bpfcc" in verdicts[name].fix
    assert verdicts[ProbeComponent.AGENT_PROBES].ok and verdicts[ProbeComponent.BEYLA_APPLICATION].ok


def test_missing_headers_and_syscall_tracepoints() -> None:
    verdicts = judge(facts(missing=("kernel_headers", "bcc_compile"), hints={"kernel_headers": "apt-get install x"}))
    assert (
        "kernel headers" in verdicts[ProbeComponent.BCC_DISCOVERY].reason
        and "apt-get install x" in verdicts[ProbeComponent.RED_BCC].fix
    )
    red = judge(facts(missing=("syscall_tracepoints",)))[ProbeComponent.RED_BCC]
    assert not red.ok and "CONFIG_FTRACE_SYSCALLS" in red.fix
    assert judge(facts(missing=("syscall_tracepoints",)))[ProbeComponent.BCC_DISCOVERY].ok


def test_no_event_channel_at_all() -> None:
    verdicts = judge(facts(missing=("ringbuf", "perf_event_array")))
    assert (
        not verdicts[ProbeComponent.AGENT_PROBES].ok and "perf buffer" in verdicts[ProbeComponent.AGENT_PROBES].reason
    )


def test_missing_uprobes_is_a_caveat_not_a_blocker() -> None:
    verdict = judge(facts(missing=("uprobe",)))[ProbeComponent.BEYLA_APPLICATION]
    assert verdict.ok and "uprobes" in verdict.reason


def test_incomplete_probe_judges_nothing() -> None:
    verdicts = judge(facts(complete=False, incomplete_reason="bpf() is not permitted (EPERM)"))
    for verdict in verdicts.values():
        assert not verdict.ok and "not judged" in verdict.reason and "EPERM" in verdict.reason
        assert "root" in verdict.fix


def test_a_component_name_is_checked() -> None:
    report = ProbeReport(kernel={}, features={}, components=judge(facts()))
    assert report.verdict(ProbeComponent.RED_BCC) == report.verdict("red_bcc")
    assert not ProbeReport(kernel={}, features={}, components={}).verdict(ProbeComponent.RED_BCC).ok
    with pytest.raises(ValueError, match="red_bbc"):
        report.verdict("red_bbc")
