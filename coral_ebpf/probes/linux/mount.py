"""mount(2), the mounted file systems, and tracefs (mounted when it is missing)."""

from __future__ import annotations

from pathlib import Path

from coral_ebpf.probes.linux.libc import LIBC, check

TRACEFS_PATHS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


def mounted_filesystems() -> dict[str, list[str]]:
    """Mount points per file system type, from /proc/self/mounts."""
    found: dict[str, list[str]] = {}
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            found.setdefault(parts[2], []).append(parts[1])
    return found


def tracefs_root() -> Path | None:
    """The directory holding tracefs `events/`, if tracefs is reachable."""
    for path in TRACEFS_PATHS:
        if (path / "events").is_dir():
            return path
    return None


def mount(source: str, target: str, fstype: str) -> None:
    """mount(2) without flags or data; OSError naming the mount when refused."""
    result = LIBC.mount(source.encode(), target.encode(), fstype.encode(), 0, None)
    check(result, f"mount -t {fstype} {source} {target}")


def ensure_tracefs() -> tuple[Path, bool]:
    """Return (tracefs root, whether we mounted it). Mounts /sys/kernel/tracing when absent.

    BCC reads tracepoint formats from tracefs; minimal hosts and containers often lack the mount.
    """
    root = tracefs_root()
    if root is not None:
        return root, False
    target = TRACEFS_PATHS[0]
    mount("tracefs", str(target), "tracefs")
    return target, True
