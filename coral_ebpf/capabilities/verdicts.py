"""From what the trials found to what can run: one verdict per component, each with a reason and a fix.

Pure functions over `Facts`, so the logic can be tested on synthetic feature sets (a 5.4 kernel
without ring buffers, a RHEL 4.18 kernel, no BTF, no kprobes) without those kernels.
The kernel version only enters where the component itself checks it (Beyla refuses kernels
below 5.8 other than RHEL 4.18); everything else comes from the trials.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from coral_ebpf.capabilities.context import Capabilities, KernelInfo
from coral_ebpf.capabilities.report import Feature, ProbeComponent, Verdict
from coral_ebpf.capabilities.trials_maps import HELPERS, MAP_SINCE

BEYLA_APP_CAPS = ("CAP_CHECKPOINT_RESTORE", "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_PERFMON", "CAP_NET_RAW")
AGENT_HELPERS = ("get_current_pid_tgid", "get_current_comm", "get_current_cgroup_id", "ktime_get_ns")

FIX_ROOT = "run it as root (sudo coral-ebpf probe / sudo coral-ebpf start)"
FIX_KPROBES = (
    "boot a kernel built with CONFIG_KPROBES=y (stock Debian, Ubuntu and RHEL kernels have it); "
    "until then red.engine: auto serves HTTP RED metrics from the built-in BCC probe"
)
FIX_BTF = (
    "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian 11+, Ubuntu 20.10+, RHEL 8.2+ ship one), "
    "or place the kernel's vmlinux with BTF at /boot/vmlinux-$(uname -r)"
)
FIX_KERNEL = "upgrade to kernel 5.8 or later (or a RHEL 8 4.18 kernel that has BPF ring buffers)"
FIX_TRACEFS = "mount tracefs: mount -t tracefs nodev /sys/kernel/tracing"


@dataclass(frozen=True)
class Facts:
    """Everything a verdict may depend on."""

    kernel: KernelInfo
    features: Mapping[str, Feature]
    capabilities: Capabilities
    perf_event_paranoid: int | None = None
    complete: bool = True
    incomplete_reason: str = ""
    btf_fallback: str = ""  # a vmlinux file with BTF outside /sys (Beyla's BTF check accepts it)
    hints: Mapping[str, str] = field(default_factory=dict)  # feature -> fix hint learned while probing

    def has(self, name: str) -> bool:
        found = self.features.get(name)
        return bool(found and found.available)

    def detail(self, name: str) -> str:
        found = self.features.get(name)
        return found.detail if found else "not probed"


class _Judgement:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.fixes: list[str] = []
        self.notes: list[str] = []

    def need(self, ok: bool, problem: str, fix: str) -> None:
        if not ok:
            self.problems.append(problem)
            if fix and fix not in self.fixes:
                self.fixes.append(fix)

    def verdict(self, ok_reason: str) -> Verdict:
        if self.problems:
            return Verdict(False, "; ".join(self.problems), " ".join(f"{fix.rstrip('.')}." for fix in self.fixes))
        reason = ok_reason + ("" if not self.notes else " (" + "; ".join(self.notes) + ")")
        return Verdict(True, reason, "")


def _event_channel(facts: Facts) -> tuple[str | None, str]:
    """Which channel the agent's probes would use to send events: ring buffer, else perf buffer."""
    if facts.has("ringbuf") and facts.has("helper_ringbuf_output"):
        return "ring buffer", ""
    if facts.has("perf_event_array") and facts.has("helper_perf_event_output"):
        return "perf buffer", f"no ring buffer ({facts.detail('ringbuf')}), so events use the perf buffer"
    return None, (
        f"neither a ring buffer ({facts.detail('ringbuf')}) nor a perf buffer "
        f"({facts.detail('perf_event_array')}; {facts.detail('helper_perf_event_output')}) works"
    )


def _need_helpers(judgement: _Judgement, facts: Facts, names: tuple[str, ...]) -> None:
    missing = [name for name in names if not facts.has(f"helper_{name}")]
    if missing:
        since = max((HELPERS[name].since for name in missing), key=lambda v: tuple(map(int, v.split("."))))
        judgement.need(
            False,
            "BPF helpers missing: " + ", ".join(f"bpf_{name}" for name in missing),
            f"upgrade to kernel {since} or later",
        )


def _need_maps(judgement: _Judgement, facts: Facts, names: tuple[str, ...]) -> None:
    missing = [name for name in names if not facts.has(name)]
    if missing:
        since = max((MAP_SINCE[name] for name in missing), key=lambda v: tuple(map(int, v.split("."))))
        judgement.need(
            False,
            "BPF map types missing: " + ", ".join(name.removeprefix("map_") for name in missing),
            f"upgrade to kernel {since} or later",
        )


def _need_bpf(judgement: _Judgement, facts: Facts) -> None:
    judgement.need(
        facts.has("bpf_syscall"),
        f"BPF programs do not load ({facts.detail('bpf_syscall')})",
        "use a kernel built with CONFIG_BPF_SYSCALL=y and run as root",
    )


def judge_agent_probes(facts: Facts) -> Verdict:
    judgement = _Judgement()
    _need_bpf(judgement, facts)
    judgement.need(
        facts.has("tracepoint"), f"tracepoint programs do not attach ({facts.detail('tracepoint')})", FIX_TRACEFS
    )
    _need_helpers(judgement, facts, (*AGENT_HELPERS, "probe_read_user"))
    _need_maps(judgement, facts, ("map_hash", "map_lru_hash", "map_percpu_array"))
    channel, note = _event_channel(facts)
    judgement.need(channel is not None, note, "upgrade to kernel 5.8 or later")
    if channel and note:
        judgement.notes.append(note)
    return judgement.verdict(
        f"tracepoint programs load and attach; the helpers and maps the agent's probes use exist; events go "
        f"through the {channel}"
    )


def _need_bcc(judgement: _Judgement, facts: Facts) -> None:
    judgement.need(
        facts.has("bcc_import"),
        f"BCC is not usable ({facts.detail('bcc_import')})",
        facts.hints.get("bcc_import", "apt-get install python3-bpfcc"),
    )
    if facts.has("bcc_import"):
        judgement.need(
            facts.has("kernel_headers"),
            f"no kernel headers for BCC ({facts.detail('kernel_headers')})",
            facts.hints.get("kernel_headers", "install the kernel headers package"),
        )
        judgement.need(
            facts.has("bcc_compile"),
            f"BCC cannot compile and load a tracepoint program ({facts.detail('bcc_compile')})",
            facts.hints.get("bcc_compile", "see the BCC error above; check the kernel headers"),
        )


def judge_bcc_discovery(facts: Facts) -> Verdict:
    judgement = _Judgement()
    _need_bpf(judgement, facts)
    _need_bcc(judgement, facts)
    judgement.need(
        facts.has("discovery_tracepoints"),
        f"discovery tracepoints unusable ({facts.detail('discovery_tracepoints')})",
        FIX_TRACEFS if "tracefs" in facts.detail("discovery_tracepoints") else "use a kernel with CONFIG_TRACEPOINTS=y",
    )
    _need_helpers(judgement, facts, AGENT_HELPERS)
    channel, note = _event_channel(facts)
    judgement.need(channel is not None, note, "upgrade to kernel 5.8 or later")
    if channel and note:
        judgement.notes.append(note)
    return judgement.verdict(
        f"BCC compiles; sched:sched_process_exec/exit and sock:inet_sock_set_state attach; events via the {channel}"
    )


def judge_red_bcc(facts: Facts) -> Verdict:
    judgement = _Judgement()
    _need_bpf(judgement, facts)
    _need_bcc(judgement, facts)
    judgement.need(
        facts.has("syscall_tracepoints"),
        f"syscall tracepoints unusable ({facts.detail('syscall_tracepoints')})",
        FIX_TRACEFS
        if "tracefs" in facts.detail("syscall_tracepoints")
        else "use a kernel built with CONFIG_FTRACE_SYSCALLS=y",
    )
    _need_helpers(judgement, facts, ("get_current_pid_tgid", "ktime_get_ns", "probe_read_user"))
    _need_maps(judgement, facts, ("map_lru_hash", "map_percpu_array"))
    channel, note = _event_channel(facts)
    judgement.need(channel is not None, note, "upgrade to kernel 5.8 or later")
    if channel and note:
        judgement.notes.append(note)
    return judgement.verdict(
        f"BCC compiles; syscall tracepoints (accept4, read, write, ... enter/exit) attach; events via the {channel}"
    )


def _beyla_kernel_and_btf(judgement: _Judgement, facts: Facts) -> None:
    kernel = facts.kernel
    judgement.need(
        kernel.at_least(5, 8) or kernel.rhel8,
        f"kernel {kernel.release} is older than 5.8, Beyla's minimum (RHEL 8 4.18 kernels excepted)",
        FIX_KERNEL,
    )
    judgement.need(
        facts.has("btf") or bool(facts.btf_fallback),
        f"no kernel BTF ({facts.detail('btf')}); Beyla refuses to start without it",
        FIX_BTF,
    )
    judgement.need(
        facts.has("ringbuf"),
        f"no BPF ring buffers ({facts.detail('ringbuf')}); Beyla sends all events through them",
        "upgrade to a kernel with BPF ring buffers (5.8+, or RHEL 8.4+)",
    )


def _beyla_base_caps(judgement: _Judgement, facts: Facts) -> None:
    caps = facts.capabilities
    if caps.effective is None:
        judgement.notes.append("capabilities unknown: /proc/self/status unreadable")
        return
    kernel = facts.kernel
    if not kernel.at_least(5, 8):
        ok = caps.has("CAP_SYS_ADMIN")
        judgement.need(ok, f"Beyla needs CAP_SYS_ADMIN on kernel {kernel.release}", FIX_ROOT)
        return
    needed = ["CAP_BPF"] + ([] if kernel.at_least(5, 11) else ["CAP_SYS_RESOURCE"])
    missing = [] if caps.has("CAP_SYS_ADMIN") else caps.missing(needed)
    judgement.need(not missing, f"missing capabilities for Beyla: {', '.join(missing)}", FIX_ROOT)


def _perf_paranoid_ok(judgement: _Judgement, facts: Facts) -> None:
    paranoid = facts.perf_event_paranoid
    if paranoid is not None and paranoid > 2 and not facts.capabilities.has("CAP_SYS_ADMIN"):
        judgement.need(
            False,
            f"kernel.perf_event_paranoid is {paranoid} (> 2), so CAP_PERFMON is not enough without CAP_SYS_ADMIN",
            "grant CAP_SYS_ADMIN, or sysctl kernel.perf_event_paranoid=2",
        )


def judge_beyla_application(facts: Facts) -> Verdict:
    judgement = _Judgement()
    _need_bpf(judgement, facts)
    _beyla_kernel_and_btf(judgement, facts)
    judgement.need(
        facts.has("kprobe"),
        f"kprobes are not available ({facts.detail('kprobe')}); Beyla's application mode needs a kprobe "
        "on sys_bind for its process watcher, and kprobes for its generic HTTP/gRPC/SQL tracers",
        FIX_KPROBES,
    )
    _beyla_base_caps(judgement, facts)
    if facts.capabilities.effective is not None and not facts.capabilities.has("CAP_SYS_ADMIN"):
        missing = facts.capabilities.missing(BEYLA_APP_CAPS)
        judgement.need(not missing, f"missing capabilities for application mode: {', '.join(missing)}", FIX_ROOT)
    _perf_paranoid_ok(judgement, facts)
    if not facts.has("uprobe"):
        judgement.notes.append(f"no uprobes ({facts.detail('uprobe')}): Go and TLS library probes will not attach")
    return judgement.verdict(
        "kernel, BTF, kprobes (sys_bind), ring buffers and capabilities meet Beyla's application-mode needs"
    )


def judge_beyla_network(facts: Facts) -> Verdict:
    judgement = _Judgement()
    _need_bpf(judgement, facts)
    _beyla_kernel_and_btf(judgement, facts)
    judgement.need(
        facts.has("socket_filter"),
        f"socket filters do not attach ({facts.detail('socket_filter')}); Beyla's network mode captures "
        "packets through one",
        "use a kernel built with CONFIG_BPF_SYSCALL and packet sockets (CONFIG_PACKET)",
    )
    _need_maps(judgement, facts, ("map_hash",))
    _beyla_base_caps(judgement, facts)
    caps = facts.capabilities
    if caps.effective is not None and not caps.has("CAP_SYS_ADMIN"):
        socket_filter_ok = caps.has("CAP_NET_RAW") and caps.has("CAP_PERFMON")
        tc_ok = caps.has("CAP_PERFMON") and caps.has("CAP_NET_ADMIN")
        judgement.need(
            socket_filter_ok or tc_ok,
            "network mode needs CAP_NET_RAW + CAP_PERFMON (socket filter) or CAP_PERFMON + CAP_NET_ADMIN (tc)",
            FIX_ROOT,
        )
    _perf_paranoid_ok(judgement, facts)
    return judgement.verdict("kernel, BTF, ring buffers, socket filters and capabilities meet Beyla's network mode")


_JUDGES: dict[ProbeComponent, Callable[[Facts], Verdict]] = {
    ProbeComponent.AGENT_PROBES: judge_agent_probes,
    ProbeComponent.BCC_DISCOVERY: judge_bcc_discovery,
    ProbeComponent.RED_BCC: judge_red_bcc,
    ProbeComponent.BEYLA_APPLICATION: judge_beyla_application,
    ProbeComponent.BEYLA_NETWORK: judge_beyla_network,
}


def judge(facts: Facts) -> dict[ProbeComponent, Verdict]:
    """A verdict for every `ProbeComponent` (all "not judged" when the probe could not run its trials)."""
    if not facts.complete:
        why = facts.incomplete_reason or "the probe could not run its BPF trials"
        return {component: Verdict(False, f"not judged: {why}", FIX_ROOT) for component in ProbeComponent}
    return {component: judge_(facts) for component, judge_ in _JUDGES.items()}
