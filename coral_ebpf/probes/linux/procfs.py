"""What /proc tells about a process: identity, environment, OpenTelemetry attributes, container,
the sockets it holds and its network namespace. The one reader of each; nothing else parses /proc.

Read directly rather than through psutil objects: discovery does this on the path between a
`listen()` and the registry update, so every read counts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import psutil

PROC = Path("/proc")
_CONTAINER_ID = re.compile(r"(?:^|[/\-:])([0-9a-f]{64})(?:\.scope)?(?:/|$)")


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: clock ticks since boot (unique per incarnation of a pid)
    comm: str
    exe: str
    cmdline: tuple[str, ...]
    service_name: str
    cgroup: str
    container_id: str | None
    environ_name: str = ""  # service.name the environment sets ("" when it sets none)
    environ_namespace: str = ""  # service.namespace the environment sets

    @property
    def start_time(self) -> float:
        """Seconds since the epoch."""
        return _boot_time() + self.start_ticks / _clock_ticks()


@lru_cache(maxsize=1)
def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


@lru_cache(maxsize=1)
def _boot_time() -> float:
    return float(psutil.boot_time())


def read_stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, start ticks) from /proc/<pid>/stat, or None if the process is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    open_paren, close_paren = raw.find(b"("), raw.rfind(b")")
    if open_paren < 0 or close_paren < 0:
        return None
    fields = raw[close_paren + 2 :].split()
    # fields[0] is field 3 (state); starttime is field 22.
    if len(fields) < 20:
        return None
    return raw[open_paren + 1 : close_paren].decode("utf-8", "replace"), fields[0].decode(), int(fields[19])


def start_ticks(pid: int) -> int | None:
    """The incarnation marker of a live (not zombie) process."""
    stat = read_stat(pid)
    if stat is None or stat[1] in ("Z", "X"):
        return None
    return stat[2]


def parse_environ(raw: bytes) -> dict[str, str]:
    """`/proc/<pid>/environ` (NUL-separated KEY=value) as a dict."""
    values: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            values[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return values


def read_environ(pid: int) -> dict[str, str]:
    """The environment a process started with ({} if it is gone or unreadable)."""
    return parse_environ(_read_bytes(PROC / str(pid) / "environ") or b"")


def resource_attribute(environ: dict[str, str], key: str) -> str:
    """Attribute `key` from OTEL_RESOURCE_ATTRIBUTES (k=v,k=v), stripped; "" when absent."""
    for pair in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        attribute, equals, value = pair.partition("=")
        if equals and attribute.strip() == key and value.strip():
            return value.strip()
    return ""


def service_name(environ: dict[str, str]) -> str | None:
    """OTEL_SERVICE_NAME, then service.name in OTEL_RESOURCE_ATTRIBUTES, then SERVICE_NAME."""
    name = environ.get("OTEL_SERVICE_NAME", "").strip()
    if name:
        return name
    name = resource_attribute(environ, "service.name")
    if name:
        return name
    return environ.get("SERVICE_NAME", "").strip() or None


def service_namespace(environ: dict[str, str]) -> str:
    """OTEL_SERVICE_NAMESPACE, then service.namespace in OTEL_RESOURCE_ATTRIBUTES; "" when neither."""
    return environ.get("OTEL_SERVICE_NAMESPACE", "") or resource_attribute(environ, "service.namespace")


def cgroup_path(text: str) -> str:
    """The unified (v2) cgroup path, else the first v1 path that is not the root."""
    fallback = ""
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        _controllers, _, path = rest.partition(":")
        if hierarchy == "0" and path not in ("", "/"):
            return path
        if not fallback and path not in ("", "/"):
            fallback = path
    return fallback or "/"


def container_id_from_cgroup(path: str) -> str | None:
    """The 64-hex container id in docker/containerd/cri-o/podman cgroup paths."""
    found = _CONTAINER_ID.findall(path)
    return found[-1] if found else None


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def inspect(pid: int) -> ProcessInfo | None:
    """Everything discovery needs about a live process, or None if it is gone or a zombie."""
    stat = read_stat(pid)
    if stat is None or stat[1] in ("Z", "X"):
        return None
    comm, _state, ticks = stat
    base = PROC / str(pid)
    try:
        exe = os.readlink(base / "exe").removesuffix(" (deleted)")
    except OSError:
        exe = ""
    cmdline_raw = _read_bytes(base / "cmdline") or b""
    cmdline = tuple(part.decode("utf-8", "replace") for part in cmdline_raw.rstrip(b"\0").split(b"\0") if part)
    environ = parse_environ(_read_bytes(base / "environ") or b"")
    cgroup_raw = _read_bytes(base / "cgroup")
    cgroup = cgroup_path(cgroup_raw.decode("utf-8", "replace")) if cgroup_raw else ""
    environ_name = service_name(environ) or ""
    name = environ_name or (os.path.basename(exe) if exe else comm)
    # The stat read first and this one bracket the other reads: same ticks means same process.
    if start_ticks(pid) != ticks:
        return None
    return ProcessInfo(
        pid=pid,
        start_ticks=ticks,
        comm=comm,
        exe=exe,
        cmdline=cmdline,
        service_name=name,
        cgroup=cgroup,
        container_id=container_id_from_cgroup(cgroup),
        environ_name=environ_name,
        environ_namespace=service_namespace(environ),
    )


def socket_inode(pid: int, fd: int) -> int | None:
    """Inode of the socket open at `fd` in process `pid`; None when it is not a socket (or gone)."""
    try:
        link = os.readlink(PROC / str(pid) / "fd" / str(fd))
    except OSError:
        return None
    if not link.startswith("socket:["):
        return None
    return int(link[8:-1])


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets in /proc/<pid>/fd (empty if the process is gone or unreadable)."""
    fd_dir = PROC / str(pid) / "fd"
    found: set[int] = set()
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return found
    for name in names:
        try:
            target = os.readlink(fd_dir / name)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def holders_of(inodes: set[int]) -> dict[int, set[int]]:
    """inode -> pids whose fd table holds it, scanning every process in /proc."""
    holders: dict[int, set[int]] = {}
    if not inodes:
        return holders
    for entry in os.listdir(PROC):
        if not entry.isdigit():
            continue
        pid = int(entry)
        for inode in socket_inodes(pid) & inodes:
            holders.setdefault(inode, set()).add(pid)
    return holders


def task_netns(tgid: int, tid: int | None = None) -> int:
    """Inode of a thread's (else the process's) network namespace, 0 if unreadable."""
    candidates = [PROC / str(tgid) / "task" / str(tid) / "ns" / "net"] if tid else []
    candidates.append(PROC / str(tgid) / "ns" / "net")
    for path in candidates:
        try:
            return os.stat(path).st_ino
        except OSError:
            continue
    return 0
