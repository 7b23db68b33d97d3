"""The hard memory limit for Beyla (`beyla.limits.memory_max`).

Beyla's memory can balloon when its OTLP receiver is slow (OBI#2138: 180 GiB), so besides the
soft GOMEMLIMIT the agent can cap it hard. In order of preference:

1. cgroup v2: a child cgroup `coral-ebpf-beyla-<agent pid>` below the agent's own cgroup, with
   `memory.max`. Possible only where the agent may enable the memory controller for its children
   (its cgroup is the root of a cgroup namespace, or was delegated with the controller enabled).
2. cgroup v1: the same child below the agent's cgroup in the `memory` hierarchy, with
   `memory.limit_in_bytes` (v1 has no "no internal processes" rule, so this usually works).
3. RLIMIT_AS on Beyla's process. Crude: it counts address space, and Go reserves more address
   space than it uses, so set memory_max to at least twice the RSS you expect.

The cgroup is removed when Beyla has exited. An OOM kill is reported from the cgroup's counters.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class MemoryGuard:
    method: str  # "none" | "cgroup2" | "cgroup1" | "rlimit_as"
    limit: int | None = None
    cgroup: Path | None = None
    note: str = ""

    @classmethod
    def none(cls) -> MemoryGuard:
        return cls("none")

    def wrapper_options(self) -> list[str]:
        if self.method in ("cgroup2", "cgroup1") and self.cgroup is not None:
            return ["--cgroup-procs", str(self.cgroup / "cgroup.procs")]
        if self.method == "rlimit_as" and self.limit:
            return ["--rlimit-as", str(self.limit)]
        return []

    def oom_kills(self) -> int | None:
        """OOM kills inside the cgroup so far (None without a cgroup)."""
        if self.cgroup is None:
            return None
        try:
            if self.method == "cgroup2":
                for line in (self.cgroup / "memory.events").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
                return 0
            text = (self.cgroup / "memory.oom_control").read_text()
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
            return 0
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.cgroup is not None and self.cgroup.exists():
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()

    def describe(self) -> dict[str, object]:
        return {"method": self.method, "limit_bytes": self.limit, "cgroup": str(self.cgroup or ""), "note": self.note}


def _own_cgroups(proc_self: Path = Path("/proc/self/cgroup")) -> dict[str, str]:
    """{"": v2 path, "memory": v1 memory path, ...} from /proc/self/cgroup."""
    found: dict[str, str] = {}
    for line in proc_self.read_text().splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            found[""] = path
        for controller in controllers.split(","):
            if controller:
                found[controller] = path
    return found


def _cgroup2_mount(root: Path) -> Path | None:
    for candidate in (root, root / "unified"):
        if (candidate / "cgroup.controllers").exists():
            return candidate
    return None


def _try_cgroup2(root: Path, own: dict[str, str], name: str, limit: int) -> MemoryGuard | None:
    mount = _cgroup2_mount(root)
    if mount is None or "" not in own:
        return None
    parent = mount / own[""].lstrip("/")
    try:
        if "memory" not in (parent / "cgroup.controllers").read_text().split():
            return None
        if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
            (parent / "cgroup.subtree_control").write_text("+memory")
        child = parent / name
        child.mkdir(exist_ok=True)
        (child / "memory.max").write_text(str(limit))
        with contextlib.suppress(OSError):
            (child / "memory.swap.max").write_text("0")
    except OSError as exc:
        log.debug("cgroup v2 memory limit not possible under %s: %s", parent, exc)
        return None
    return MemoryGuard("cgroup2", limit, child)


def _try_cgroup1(root: Path, own: dict[str, str], name: str, limit: int) -> MemoryGuard | None:
    hierarchy = root / "memory"
    if "memory" not in own or not (hierarchy / "memory.limit_in_bytes").exists():
        return None
    child = hierarchy / own["memory"].lstrip("/") / name
    try:
        child.mkdir(exist_ok=True)
        (child / "memory.limit_in_bytes").write_text(str(limit))
    except OSError as exc:
        log.debug("cgroup v1 memory limit not possible at %s: %s", child, exc)
        with contextlib.suppress(OSError):
            child.rmdir()
        return None
    return MemoryGuard("cgroup1", limit, child)


def prepare(limit: int | None, *, root: Path | None = None, instance: str = "") -> MemoryGuard:
    """The strongest hard limit available for one Beyla start (see the module docstring)."""
    if not limit:
        return MemoryGuard.none()
    root = CGROUP_ROOT if root is None else root
    name = f"coral-ebpf-beyla-{os.getpid()}{('-' + instance) if instance else ''}"
    try:
        own = _own_cgroups()
    except OSError:
        own = {}
    for attempt in (_try_cgroup2, _try_cgroup1):
        guard = attempt(root, own, name, limit)
        if guard is not None:
            return guard
    return MemoryGuard(
        "rlimit_as",
        limit,
        note="no writable memory cgroup; RLIMIT_AS counts address space, which Go reserves generously",
    )
