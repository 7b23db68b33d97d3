"""Facts about the host read from /proc, /sys and /etc: context for the probe's report, never its verdict.

Every reader takes its path as a parameter so unit tests can point it at fixtures, and every
reader survives a missing or unreadable file (it says so instead of raising).
"""

from __future__ import annotations

import gzip
import os
import platform
import re
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coral_ebpf.probes.linux.mount import mounted_filesystems

# Linux capability numbers (include/uapi/linux/capability.h) the agent and Beyla care about.
CAPABILITIES = {
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_RESOURCE": 24,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}

RHEL_LIKE_IDS = frozenset({"rhel", "centos", "rocky", "almalinux", "ol", "fedora", "amzn"})


@dataclass(frozen=True)
class OsRelease:
    id: str = ""
    id_like: tuple[str, ...] = ()
    version_id: str = ""
    pretty_name: str = ""
    source: str = ""  # which file it came from, or why none


def parse_os_release(text: str, source: str = "") -> OsRelease:
    """Parse the KEY=value lines of os-release(5), with shell-style quoting."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = re.sub(r"\\(.)", r"\1", value)
    return OsRelease(
        id=values.get("ID", "").lower(),
        id_like=tuple(values.get("ID_LIKE", "").lower().split()),
        version_id=values.get("VERSION_ID", ""),
        pretty_name=values.get("PRETTY_NAME", values.get("NAME", "")),
        source=source,
    )


def read_os_release(paths: tuple[Path, ...] = (Path("/etc/os-release"), Path("/usr/lib/os-release"))) -> OsRelease:
    for path in paths:
        try:
            return parse_os_release(path.read_text(errors="replace"), str(path))
        except OSError:
            continue
    return OsRelease(source=f"none of {', '.join(map(str, paths))} is readable")


def version_tuple(release: str) -> tuple[int, int, int]:
    """(major, minor, patch) from a release string such as `4.18.0-553.el8_10.x86_64` or `6.12.117+deb12-amd64`."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not match:
        return (0, 0, 0)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def is_rhel8_kernel(release: str, os_release: OsRelease, proc_version: str = "") -> bool:
    """A RHEL-family 4.18 kernel, which Beyla accepts despite its 5.8 floor (backported BPF features)."""
    if version_tuple(release)[:2] != (4, 18):
        return False
    if ".el8" in release or ".el8" in proc_version:
        return True
    family = {os_release.id, *os_release.id_like}
    return bool(family & RHEL_LIKE_IDS) and os_release.version_id.split(".")[0] == "8"


@dataclass(frozen=True)
class KernelInfo:
    release: str
    version: str  # uname -v
    machine: str
    numbers: tuple[int, int, int]
    os_release: OsRelease
    rhel8: bool

    def at_least(self, major: int, minor: int) -> bool:
        return self.numbers[:2] >= (major, minor)

    def to_dict(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "version": self.version,
            "machine": self.machine,
            "version_numbers": ".".join(map(str, self.numbers)),
            "distribution": self.os_release.pretty_name or self.os_release.id or "unknown",
            "distribution_id": self.os_release.id,
            "distribution_version": self.os_release.version_id,
            "rhel8_kernel": self.rhel8,
        }


def kernel_info(
    release: str | None = None,
    version: str | None = None,
    os_release: OsRelease | None = None,
    proc_version: Path = Path("/proc/version"),
) -> KernelInfo:
    uname = platform.uname()
    release = release or uname.release
    os_release = os_release or read_os_release()
    return KernelInfo(
        release=release,
        version=version if version is not None else uname.version,
        machine=uname.machine,
        numbers=version_tuple(release),
        os_release=os_release,
        rhel8=is_rhel8_kernel(release, os_release, read_text(proc_version) or ""),
    )


# --- capabilities -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Capabilities:
    effective: int | None  # the CapEff bit mask; None when /proc/self/status could not be read
    source: str = "/proc/self/status"

    def has(self, name: str) -> bool:
        return self.effective is not None and bool(self.effective >> CAPABILITIES[name] & 1)

    def missing(self, names: tuple[str, ...] | list[str]) -> list[str]:
        return [name for name in names if not self.has(name)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "effective_mask": None if self.effective is None else f"0x{self.effective:016x}",
            **{name: self.has(name) for name in CAPABILITIES},
        }


def parse_cap_eff(status_text: str) -> int | None:
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            try:
                return int(line.split(":", 1)[1].strip(), 16)
            except ValueError:
                return None
    return None


def read_capabilities(status: Path = Path("/proc/self/status")) -> Capabilities:
    text = read_text(status)
    if text is None:
        return Capabilities(None, f"{status} unreadable")
    return Capabilities(parse_cap_eff(text), str(status))


# --- small readers ------------------------------------------------------------------------------------------
def read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def read_int(path: Path) -> int | None:
    text = read_text(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def parse_lockdown(text: str | None) -> str:
    """`none [integrity] confidentiality` -> `integrity`."""
    if text is None:
        return "unknown"
    match = re.search(r"\[(\w+)\]", text)
    return match.group(1) if match else text.strip() or "unknown"


def read_lockdown(path: Path = Path("/sys/kernel/security/lockdown")) -> str:
    text = read_text(path)
    if text is None:
        mounted = "securityfs" in mounted_filesystems()
        return "unknown (" + (f"{path} unreadable" if mounted else "securityfs is not mounted") + ")"
    return parse_lockdown(text)


def kernel_config_sources(release: str) -> tuple[Path, ...]:
    return (Path("/proc/config.gz"), Path(f"/boot/config-{release}"))


def read_kernel_config(paths: tuple[Path, ...]) -> tuple[dict[str, str], str]:
    """CONFIG_* values from the first readable config file, and which file it was (or why none)."""
    for path in paths:
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        try:
            text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode(errors="replace")
        except (OSError, EOFError):
            continue
        return parse_kernel_config(text), str(path)
    return {}, f"no kernel config found ({', '.join(map(str, paths))})"


def parse_kernel_config(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            values[line[2:].split()[0]] = "n"
    return values


CONFIG_KEYS_OF_INTEREST = (
    "CONFIG_BPF_SYSCALL", "CONFIG_BPF_JIT", "CONFIG_DEBUG_INFO_BTF", "CONFIG_KPROBES", "CONFIG_KPROBE_EVENTS",
    "CONFIG_UPROBES", "CONFIG_UPROBE_EVENTS", "CONFIG_FTRACE_SYSCALLS", "CONFIG_BPF_EVENTS",
    "CONFIG_FUNCTION_TRACER", "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS", "CONFIG_IKHEADERS",
)  # fmt: skip


@dataclass(frozen=True)
class HostContext:
    jit_enable: int | None
    lockdown: str
    unprivileged_bpf_disabled: int | None
    perf_event_paranoid: int | None
    mounts: dict[str, list[str]]
    memlock: tuple[int, int]
    capabilities: Capabilities
    euid: int
    kernel_config: dict[str, str] = field(default_factory=dict)
    kernel_config_source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "euid": self.euid,
            "jit_enable": self.jit_enable,
            "lockdown": self.lockdown,
            "unprivileged_bpf_disabled": self.unprivileged_bpf_disabled,
            "perf_event_paranoid": self.perf_event_paranoid,
            "bpffs": self.mounts.get("bpf", []),
            "tracefs": self.mounts.get("tracefs", []),
            "debugfs": self.mounts.get("debugfs", []),
            "memlock_limit": {"soft": _limit(self.memlock[0]), "hard": _limit(self.memlock[1])},
            "capabilities": self.capabilities.to_dict(),
            "kernel_config_source": self.kernel_config_source,
            "kernel_config": {key: self.kernel_config.get(key, "absent") for key in CONFIG_KEYS_OF_INTEREST}
            if self.kernel_config
            else {},
        }


def _limit(value: int) -> int | str:
    return "unlimited" if value == resource.RLIM_INFINITY else value


def host_context(release: str) -> HostContext:
    config, config_source = read_kernel_config(kernel_config_sources(release))
    return HostContext(
        jit_enable=read_int(Path("/proc/sys/net/core/bpf_jit_enable")),
        lockdown=read_lockdown(),
        unprivileged_bpf_disabled=read_int(Path("/proc/sys/kernel/unprivileged_bpf_disabled")),
        perf_event_paranoid=read_int(Path("/proc/sys/kernel/perf_event_paranoid")),
        mounts={k: v for k, v in mounted_filesystems().items() if k in ("bpf", "tracefs", "debugfs", "securityfs")},
        memlock=resource.getrlimit(resource.RLIMIT_MEMLOCK),
        capabilities=read_capabilities(),
        euid=os.geteuid(),
        kernel_config=config,
        kernel_config_source=config_source,
    )
