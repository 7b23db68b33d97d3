"""Turning how Beyla ended (exit status, first ERROR line) into a diagnosis a person can act on.

Every fatal path in Beyla's main() calls `os.Exit(-1)`, i.e. status 255, after one ERROR line
(beyla-facts.md §1). The messages matched here are Beyla's own:

    can't start Beyla           error="kernel version X.Y not supported. Minimum required version is 5.8"
                                error="kernel does not support BTF (CONFIG_DEBUG_INFO_BTF): ..."
                                error="the following capabilities are required: CAP_BPF, ..."
    wrong Beyla configuration   error="you need to define at least one exporter: ..."
    wrong configuration         (bad YAML or environment values)
    can't open <path>
    Beyla ran with errors       (runtime; e.g. a port already in use, MEMLOCK too low)
"""

from __future__ import annotations

import signal
from dataclasses import asdict, dataclass
from typing import Any

from coral_ebpf.beyla.kill_cause import KillEvidence
from coral_ebpf.beyla.logparse import LogLine

WATCHER_FAILURE = "Unable to load eBPF watcher for process events"
BEYLA_FATAL_STATUS = 255


@dataclass(frozen=True)
class Diagnosis:
    kind: str
    message: str
    fix: str
    retryable: bool
    line: str = ""  # the Beyla line it was drawn from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


KERNEL_FIX = (
    "Beyla needs Linux 5.8 or newer with BTF (RHEL-family 4.18 .el8 kernels also work); upgrade the kernel, "
    "or set red.engine: bcc to use the built-in BCC engine"
)
BTF_FIX = (
    "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (/sys/kernel/btf/vmlinux must exist), or set red.engine: bcc"
)
CAPS_FIX = (
    "run the agent as root with full capabilities (CAP_SYS_ADMIN, or CAP_BPF + CAP_PERFMON + CAP_SYS_PTRACE + "
    "CAP_DAC_READ_SEARCH + CAP_NET_RAW + CAP_CHECKPOINT_RESTORE); in a container use privileged: true and pid: host"
)
CONFIG_FIX = (
    "Beyla rejected the configuration the agent generated; see it with 'coral-ebpf beyla config' and check the "
    "beyla.* keys of the agent config (an older Beyla may not know a key: 'coral-ebpf beyla version')"
)
MEMORY_LIMIT_FIX = (
    "raise beyla.limits.memory_max (with RLIMIT_AS, allow at least twice the expected RSS), or lower the load "
    "(fewer services, beyla.protocols)"
)
MEMLOCK_FIX = (
    "raise the locked-memory limit for the agent (systemd: LimitMEMLOCK=infinity; shell: ulimit -l unlimited); "
    "kernels from 5.11 account BPF memory by cgroup and do not need it"
)
WATCHER_FIX = (
    "Beyla's process watcher needs a kprobe on sys_bind, so it cannot discover or attach to services here; "
    "use a kernel with CONFIG_KPROBES=y, or set red.engine: bcc"
)


def _has(text: str, *needles: str) -> bool:
    lowered = text.lower()
    return any(needle.lower() in lowered for needle in needles)


def diagnose_line(line: LogLine) -> Diagnosis | None:
    """A diagnosis for one ERROR (or Go runtime) line, or None when it says nothing specific."""
    message, error = line.message, line.error
    text = f"{message} {error}"
    if line.stream == "stderr" and message.startswith("coral-ebpf wrapper:"):
        return Diagnosis("start_failed", message.removeprefix("coral-ebpf wrapper: "), "", False, line.raw)
    if _has(text, "CONFIG_DEBUG_INFO_BTF", "no BTF found", "load kernel spec", "btf: not supported"):
        return Diagnosis("no_btf", error or message, BTF_FIX, False, line.raw)
    if _has(error, "kernel version") and _has(error, "minimum required version"):
        return Diagnosis("kernel_too_old", error, KERNEL_FIX, False, line.raw)
    if _has(text, "capabilities are required", "Required system capabilities"):
        return Diagnosis("capabilities", error or message, CAPS_FIX, False, line.raw)
    if _has(text, "MEMLOCK", "memlock"):
        return Diagnosis("memlock", error or message, MEMLOCK_FIX, False, line.raw)
    if message.startswith("can't open "):
        path = message.removeprefix("can't open ")
        return Diagnosis(
            "config_unreadable",
            f"Beyla cannot open its config {path}: {error}",
            "check that the agent's state_dir is on a local, writable filesystem",
            True,
            line.raw,
        )
    if message in ("wrong Beyla configuration", "wrong configuration") or message.startswith("unknown log level"):
        return Diagnosis("wrong_configuration", error or message, CONFIG_FIX, False, line.raw)
    if _has(error, "address already in use"):
        return Diagnosis(
            "port_in_use",
            error,
            "another process holds a port Beyla needs (its /healthz port is chosen afresh on each start); "
            "find it with 'ss -ltnp'",
            True,
            line.raw,
        )
    if message == WATCHER_FAILURE:
        if _has(error, "memlock"):
            return Diagnosis("discovery_dead", f"{message}: {error}", MEMLOCK_FIX, True, line.raw)
        return Diagnosis("discovery_dead", f"{message}: {error}" if error else message, WATCHER_FIX, True, line.raw)
    if line.stream == "stderr" and message.startswith(("panic:", "fatal error:")):
        return Diagnosis("crash", message, "Beyla crashed; the agent restarts it with back-off", True, line.raw)
    if message == "Beyla ran with errors":
        return Diagnosis("runtime_error", error or message, "see Beyla's preceding log lines", True, line.raw)
    if message == "can't start Beyla":
        return Diagnosis("start_failed", error or message, "see Beyla's preceding log lines", False, line.raw)
    return None


def diagnose_exit(
    status: int | None,
    first_error: LogLine | None,
    *,
    oom_kills: int | None = None,
    memory_limit: int | None = None,
    kill: KillEvidence | None = None,
) -> Diagnosis:
    """Why Beyla ended: its status (negative: killed by that signal) and the first ERROR line it printed.

    For a SIGKILL, `kill` holds what the cgroup and the kernel log recorded (kill_cause.gather), which
    tells the OOM killer from a SIGKILL sent by someone else."""
    from_line = diagnose_line(first_error) if first_error is not None else None
    if status is not None and status < 0:
        if status == -signal.SIGKILL:
            return _diagnose_sigkill(kill or KillEvidence(oom_kills, False, None), memory_limit)
        name = signal.Signals(-status).name if -status in signal.Signals._value2member_map_ else str(-status)
        return Diagnosis("killed", f"Beyla was killed by {name} from outside the agent", KILLED_FIX, True)
    out_of_memory = from_line is not None and from_line.kind == "crash" and _has(from_line.message, "out of memory")
    if from_line is not None and out_of_memory and memory_limit:
        return Diagnosis(
            "memory_limit",
            f"Beyla ran out of memory under beyla.limits.memory_max ({memory_limit} bytes): {from_line.message}",
            MEMORY_LIMIT_FIX,
            True,
            from_line.line,
        )
    if from_line is not None and from_line.kind != "discovery_dead":
        return from_line
    if status == BEYLA_FATAL_STATUS:
        detail = first_error.raw if first_error is not None else "no ERROR line"
        return Diagnosis("fatal", f"Beyla exited with status 255 ({detail})", "see Beyla's log lines", True)
    if status == 0:
        return Diagnosis("exited", "Beyla exited with status 0 without being asked to stop", "", True)
    if status in (126, 127):
        return Diagnosis("start_failed", f"the exec wrapper failed with status {status}", "", False)
    return Diagnosis("crash", f"Beyla exited with status {status}", "the agent restarts it with back-off", True)


KILLED_FIX = "something outside the agent (an operator, a service manager, a script) killed it; the agent restarts it"


def _diagnose_sigkill(evidence: KillEvidence, memory_limit: int | None) -> Diagnosis:
    """The OOM killer (at the agent's memory limit, or the machine's), or a SIGKILL from outside."""
    limit = f" ({memory_limit} bytes)" if memory_limit else ""
    if evidence.oom and memory_limit:
        return Diagnosis(
            "memory_limit",
            f"Beyla was killed by SIGKILL from the OOM killer at beyla.limits.memory_max{limit} "
            f"({evidence.describe()})",
            MEMORY_LIMIT_FIX,
            True,
            evidence.kernel_oom_line or "",
        )
    if evidence.oom:
        return Diagnosis(
            "oom_killed",
            f"Beyla was killed by SIGKILL from the kernel's OOM killer ({evidence.describe()})",
            "the machine ran out of memory; free memory, or bound Beyla with beyla.limits.memory_max",
            True,
            evidence.kernel_oom_line or "",
        )
    if memory_limit and not evidence.conclusive:
        return Diagnosis(
            "memory_limit",
            f"Beyla was killed by SIGKILL, most likely for reaching beyla.limits.memory_max{limit} "
            f"({evidence.describe()})",
            MEMORY_LIMIT_FIX,
            True,
        )
    if evidence.conclusive:
        return Diagnosis(
            "killed",
            f"Beyla was killed by SIGKILL from outside the agent, not by the OOM killer ({evidence.describe()})",
            KILLED_FIX,
            True,
        )
    return Diagnosis(
        "killed",
        f"Beyla was killed by SIGKILL; no OOM record could be read ({evidence.describe()})",
        "if it was the OOM killer, 'dmesg' as root shows it; the agent restarts Beyla",
        True,
    )
