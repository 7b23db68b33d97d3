"""`probe()`: try what the running kernel and this process's privileges allow, and judge each component.

Order of work: read the context (cheap), load a socket filter to learn whether bpf() is permitted
at all, start the BCC compile on a worker thread (the slow part, mostly in clang, outside the
GIL), and meanwhile parse vmlinux BTF and run the syscall-level trials on the calling thread.
Nothing outlives the call: every trial closes its fds, the worker thread is joined, and the only
lasting effects are a tracefs mount when none existed (BCC needs it too) and the merged headers
tree in the state dir.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral_ebpf.capabilities import trials_attach as attach
from coral_ebpf.capabilities.bcc_check import BccOutcome, try_bcc
from coral_ebpf.capabilities.btf import VMLINUX_BTF, BtfError, read_vmlinux_btf
from coral_ebpf.capabilities.context import HostContext, KernelInfo, host_context, kernel_info
from coral_ebpf.capabilities.report import Feature, ProbeReport
from coral_ebpf.capabilities.trials_maps import try_bpf_syscall, try_helpers, try_maps, try_memcg_accounting
from coral_ebpf.capabilities.verdicts import Facts, judge
from coral_ebpf.probes.linux.mount import ensure_tracefs

log = logging.getLogger(__name__)

# Features every report carries, in display order.
FEATURE_ORDER = (
    "bpf_syscall", "jit", "btf", "memcg_accounting", "ringbuf", "perf_event_array", "map_hash", "map_array",
    "map_percpu_hash", "map_percpu_array", "map_lru_hash", "map_lru_percpu_hash", "socket_filter", "tracepoint",
    "discovery_tracepoints", "syscall_tracepoints", "raw_tracepoint", "kprobe", "uprobe", "fentry",
)  # fmt: skip
BCC_FEATURES = ("bcc_import", "bcc_compile", "kernel_headers")

# Where libbpf (and so Beyla) looks for kernel BTF when /sys/kernel/btf/vmlinux is missing.
BTF_FALLBACKS = (
    "/boot/vmlinux-{r}", "/lib/modules/{r}/vmlinux-{r}", "/lib/modules/{r}/build/vmlinux",
    "/usr/lib/modules/{r}/kernel/vmlinux", "/usr/lib/debug/boot/vmlinux-{r}", "/usr/lib/debug/boot/vmlinux-{r}.debug",
    "/usr/lib/debug/lib/modules/{r}/vmlinux",
)  # fmt: skip
EVENT_SOURCES = Path("/sys/bus/event_source/devices")


def _btf_trial(release: str) -> tuple[Feature, dict[str, int], dict[str, Any], str]:
    """(feature, function ids for fentry, context, fallback path or "")."""
    fallback = next((p for p in (f.format(r=release) for f in BTF_FALLBACKS) if Path(p).is_file()), "")
    if not VMLINUX_BTF.exists():
        extra = f"; {fallback} exists (Beyla can use it)" if fallback else ""
        return Feature(False, f"no {VMLINUX_BTF}: kernel built without CONFIG_DEBUG_INFO_BTF{extra}"), {}, {}, fallback
    try:
        summary = read_vmlinux_btf(attach.FENTRY_CANDIDATES)
    except OSError as exc:
        return Feature(False, f"{VMLINUX_BTF} unreadable: {exc.strerror or exc}"), {}, {}, fallback
    except BtfError as exc:
        return Feature(False, f"{VMLINUX_BTF} does not parse: {exc}"), {}, {}, fallback
    detail = (
        f"{VMLINUX_BTF} parses: {summary.types} types, {summary.functions} functions, "
        f"{summary.size / 1_048_576:.1f} MiB"
    )
    context = {"types": summary.types, "functions": summary.functions, "bytes": summary.size}
    return Feature(True, detail), summary.function_ids, context, fallback


def _tracefs() -> tuple[Path | None, bool, str]:
    try:
        root, mounted = ensure_tracefs()
    except OSError as exc:
        return None, False, f"tracefs is not mounted and mounting it failed: {exc.strerror or exc}"
    return root, mounted, f"mounted tracefs at {root} (it was not mounted)" if mounted else ""


def _submit_attach_trials(pool: ThreadPoolExecutor, tracefs: Path | None) -> dict[str, Future[Feature]]:
    """Start the attach trials that do not need BTF, each on its own worker.

    Detaching a tracepoint, kprobe or uprobe waits for an RCU grace period in the kernel
    (75-120 ms here, measured), with the GIL released: run side by side, they cost one wait.
    """
    return {
        "socket_filter": pool.submit(attach.try_socket_filter),
        "tracepoint": pool.submit(attach.try_tracepoint, tracefs),
        "discovery_tracepoints": pool.submit(
            attach.try_tracepoint_set, tracefs, attach.DISCOVERY_TRACEPOINTS, "sock/inet_sock_set_state"
        ),
        "syscall_tracepoints": pool.submit(
            attach.try_tracepoint_set, tracefs, attach.RED_TRACEPOINTS, "syscalls/sys_enter_accept4"
        ),
        "raw_tracepoint": pool.submit(attach.try_raw_tracepoint),
        "kprobe": pool.submit(attach.try_kprobe, tracefs),
        "uprobe": pool.submit(attach.try_uprobe, tracefs),
    }


def _sysfs_hint(feature: str) -> str:
    """What sysfs (readable without root) suggests about a probe type that could not be tried."""
    if feature not in ("kprobe", "uprobe"):
        return ""
    present = (EVENT_SOURCES / feature).is_dir()
    return f"; sysfs hint: {EVENT_SOURCES}/{feature} is {'present' if present else 'absent'}"


def _event_sources() -> list[str]:
    try:
        return sorted(p.name for p in EVENT_SOURCES.iterdir())
    except OSError:
        return []


def probe(state_dir: Path, *, include_bcc: bool = True) -> ProbeReport:
    """Probe the running kernel by trying; safe to call from the agent (no fds, threads or probes left behind).

    `state_dir` holds the merged kernel headers tree BCC compiles against. `include_bcc=False`
    skips the BCC compile (its features then say "not tried").
    """
    started = time.perf_counter()
    kernel = kernel_info()
    host = host_context(kernel.release)
    notes: list[str] = []
    if host.euid != 0:
        notes.append(f"not running as root (euid {host.euid}): some checks need root; run: sudo coral-ebpf probe")

    bpf_syscall, jit, bpf_errno = try_bpf_syscall()
    basics = _Basics(
        started=started,
        kernel=kernel,
        host=host,
        notes=notes,
        bpf_syscall=bpf_syscall,
        jit=jit,
        memcg=try_memcg_accounting() if bpf_syscall.available else None,
        permitted=bpf_errno not in (errno.EPERM, errno.EACCES),
    )
    with memlock_raised(basics.memcg is not None and not basics.memcg.available, notes):
        return _run_trials(state_dir, include_bcc, basics)


@dataclass(frozen=True)
class _Basics:
    """What is known before the trials start."""

    started: float
    kernel: KernelInfo
    host: HostContext
    notes: list[str]
    bpf_syscall: Feature
    jit: Feature
    memcg: Feature | None  # None when no program loads at all
    permitted: bool  # False when bpf() said EPERM/EACCES: not root


@contextlib.contextmanager
def memlock_raised(needed: bool, notes: list[str]) -> Iterator[None]:
    """Before 5.11 the kernel charges BPF memory to RLIMIT_MEMLOCK, often 64 KiB. BCC, libbpf and Beyla
    lift it before loading anything, so the trials do the same, to unlimited or else up to the hard
    limit, and put it back afterwards."""
    previous = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if not needed or previous[0] == resource.RLIM_INFINITY:
        yield
        return
    raised = None
    for wanted in ((resource.RLIM_INFINITY, resource.RLIM_INFINITY), (previous[1], previous[1])):
        if wanted[0] != resource.RLIM_INFINITY and wanted[0] <= previous[0]:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, wanted)
        except (OSError, ValueError):
            continue
        raised = wanted
        break
    if raised is None:
        notes.append(f"RLIMIT_MEMLOCK is {previous[0]} bytes and could not be raised: trials may get EPERM")
        yield
        return
    shown = "unlimited" if raised[0] == resource.RLIM_INFINITY else f"{raised[0]} bytes"
    notes.append(f"raised RLIMIT_MEMLOCK from {previous[0]} bytes to {shown} for the trials, as BCC and Beyla do")
    try:
        yield
    finally:
        if resource.getrlimit(resource.RLIMIT_MEMLOCK) == raised:  # unless someone else changed it meanwhile
            resource.setrlimit(resource.RLIMIT_MEMLOCK, previous)


def _run_trials(state_dir: Path, include_bcc: bool, basics: _Basics) -> ProbeReport:
    kernel, host, notes, bpf_syscall, permitted = (
        basics.kernel, basics.host, basics.notes, basics.bpf_syscall, basics.permitted
    )  # fmt: skip
    tracefs, tracefs_mounted, tracefs_note = _tracefs() if permitted else (None, False, "")
    if tracefs_note:
        notes.append(tracefs_note)

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="coral-probe") as pool:
        bcc_future = (
            pool.submit(try_bcc, state_dir, kernel.os_release.id, permitted and bpf_syscall.available)
            if include_bcc
            else None
        )
        attach_futures = _submit_attach_trials(pool, tracefs) if bpf_syscall.available else {}
        btf, function_ids, btf_context, btf_fallback = _btf_trial(kernel.release)
        features: dict[str, Feature] = {"bpf_syscall": bpf_syscall, "jit": basics.jit, "btf": btf}
        if bpf_syscall.available and basics.memcg is not None:
            features["memcg_accounting"] = basics.memcg
            features.update(try_maps())
            features.update(try_helpers())
            features["fentry"] = attach.try_fentry(function_ids, "" if btf.available else btf.detail)
            features.update({name: future.result() for name, future in attach_futures.items()})
        else:
            why = "bpf() is not permitted for this process" if not permitted else "bpf() does not work here"
            for name in FEATURE_ORDER:
                features.setdefault(name, Feature(False, f"not tried: {why}{_sysfs_hint(name)}"))
        bcc = bcc_future.result() if bcc_future is not None else BccOutcome()
    for name in BCC_FEATURES:
        features[name] = bcc.features.get(name, Feature(False, "not tried: BCC check skipped"))

    incomplete_reason = ""
    if not permitted:
        incomplete_reason = f"bpf() is not permitted for this process ({bpf_syscall.detail}); needs root"
        notes.append(f"could not probe: {incomplete_reason}. Showing what can be read without root.")
    facts = Facts(
        kernel=kernel,
        features=features,
        capabilities=host.capabilities,
        perf_event_paranoid=host.perf_event_paranoid,
        complete=permitted,
        incomplete_reason=incomplete_reason,
        btf_fallback=btf_fallback,
        hints=bcc.hints,
    )
    ordered = {name: features[name] for name in (*FEATURE_ORDER, *BCC_FEATURES) if name in features}
    ordered.update({name: value for name, value in features.items() if name not in ordered})
    context = {
        **host.to_dict(),
        "tracefs_root": str(tracefs) if tracefs else None,
        "tracefs_mounted_by_probe": tracefs_mounted,
        "event_sources": _event_sources(),
        "btf": btf_context,
        "btf_fallback": btf_fallback or None,
        "kernel_headers": bcc.context.get("kernel_headers", "not checked"),
        "bcc": bcc.context.get("bcc", features["bcc_import"].detail),
        "state_dir": str(state_dir),
    }
    duration_ms = (time.perf_counter() - basics.started) * 1000
    log.debug("capability probe done", extra={"fields": {"duration_ms": round(duration_ms, 1)}})
    return ProbeReport(
        kernel=kernel.to_dict(),
        features=ordered,
        components=judge(facts),
        context=context,
        duration_ms=duration_ms,
        complete=permitted,
        notes=tuple(notes),
    )
