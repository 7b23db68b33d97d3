"""Find a kernel headers tree BCC can compile against, and prepare it without touching /lib/modules.

BCC looks for `/lib/modules/$(uname -r)/build`. When that is missing (a custom kernel, a cloud
image), a nearby Debian `linux-headers-<abi>` plus `linux-headers-<abi>-common` pair works for
tracepoint programs, because BCC reads tracepoint layouts from tracefs. Neither directory works
alone (`kconfig.h` or the generated headers are missing), so we build a merged tree of symlinks
under the agent's state dir and hand it to BCC as `BCC_KERNEL_SOURCE`.

`find_headers` only looks (no writes); `prepare_headers` builds the merged tree, once: a stamp
records which sources it was built from, and an unchanged stamp means the tree is reused.
"""

from __future__ import annotations

import fcntl
import os
import platform
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from coral_ebpf.errors import CoralError

USR_SRC = Path("/usr/src")
LIB_MODULES = Path("/lib/modules")
DPKG_INFO = Path("/var/lib/dpkg/info")
TREE_FORMAT = "2"  # bump when the layout of the merged tree changes, so old trees are rebuilt
STAMP_NAME = ".coral-ebpf-stamp"
HEADERS_SUBDIR = "kernel-headers"

# `uname -m` -> the kernel's arch directory name, to skip headers built for another architecture.
KERNEL_ARCH = {
    "x86_64": "x86", "i686": "x86", "i386": "x86", "aarch64": "arm64", "armv7l": "arm",
    "ppc64le": "powerpc", "ppc64": "powerpc", "s390x": "s390", "riscv64": "riscv", "mips64": "mips",
}  # fmt: skip

_INCLUDE_RE = re.compile(r"^\s*include\s+(\S+)/Makefile\s*$", re.MULTILINE)
_UTS_RE = re.compile(r'^#define\s+UTS_RELEASE\s+"([^"]+)"', re.MULTILINE)
_ARCH_RE = re.compile(r"^\s*(?:override\s+)?ARCH\s*:?=\s*(\S+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class HeadersTree:
    path: Path | None  # None: BCC finds /lib/modules/<release>/build itself
    description: str
    exact: bool  # built for the running kernel release
    kernel_source_env: str | None  # value for BCC_KERNEL_SOURCE, if one is needed


@dataclass(frozen=True)
class HeadersSource:
    """An installed headers tree, before anything is written."""

    kind: str  # "build" (/lib/modules/<rel>/build), "env" (BCC_KERNEL_SOURCE), "split" (arch + common), "tree"
    release: str  # the kernel release the headers were built for
    dirs: tuple[Path, ...]  # merged in this order, later ones win (common first, then arch)
    exact: bool

    @property
    def needs_merge(self) -> bool:
        return self.kind in ("split", "tree")

    def describe(self, running: str) -> str:
        names = " + ".join(str(d) for d in reversed(self.dirs))
        if self.kind == "build":
            return f"{self.dirs[0]} (headers of the running kernel)"
        if self.kind == "env":
            return f"{self.dirs[0]} (from BCC_KERNEL_SOURCE)"
        match = "" if self.exact else f"; built for {self.release}, running {running}: fine for tracepoint programs"
        return f"{names}{match}"


class NoKernelHeadersError(CoralError):
    pass


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:4])


def _kernel_release_of(arch_dir: Path) -> str:
    """The `uname -r` of the kernel these headers were built for (UTS_RELEASE), else the dir name.

    Not include/config/kernel.release: Debian puts the upstream version there (6.1.192), not the ABI.
    """
    try:
        match = _UTS_RE.search((arch_dir / "include" / "generated" / "utsrelease.h").read_text(errors="replace"))
    except OSError:
        match = None
    return match.group(1) if match else arch_dir.name.removeprefix("linux-headers-")


def _arch_of(arch_dir: Path) -> str | None:
    """The kernel ARCH a headers dir was built for, from Debian's .kernelvariables or its arch/ subdirs."""
    try:
        match = _ARCH_RE.search((arch_dir / ".kernelvariables").read_text())
    except OSError:
        match = None
    if match:
        return match.group(1)
    try:
        arches = [p.name for p in (arch_dir / "arch").iterdir() if p.is_dir()]
    except OSError:
        return None
    return arches[0] if len(arches) == 1 else None


def _common_dir(arch_dir: Path, usr_src: Path) -> Path | None:
    """The `-common` half of a Debian split install, named by the arch dir's Makefile `include` line."""
    try:
        match = _INCLUDE_RE.search((arch_dir / "Makefile").read_text(errors="replace"))
    except OSError:
        match = None
    candidates: list[Path] = []
    if match:
        included = Path(match.group(1))
        candidates.append(included if included.is_absolute() else arch_dir / included)
        candidates.append(usr_src / included.name)  # the same package extracted under another root
    abi = arch_dir.name.removeprefix("linux-headers-")
    base = re.sub(r"-[a-z][a-z0-9]*(?:-[a-z][a-z0-9]*)*$", "", abi)  # 6.1.0-56-rt-amd64 -> 6.1.0-56
    candidates += [usr_src / f"linux-headers-{base}-common", usr_src / f"linux-headers-{base}-common-rt"]
    for candidate in candidates:
        if candidate != arch_dir and (candidate / "include" / "linux").is_dir():
            return candidate
    return None


def installed_sources(usr_src: Path = USR_SRC, machine: str | None = None) -> list[HeadersSource]:
    """Every usable headers tree under `usr_src` for this machine's architecture (exactness not yet known)."""
    want_arch = KERNEL_ARCH.get(machine or platform.machine())
    found: list[HeadersSource] = []
    try:
        entries = sorted(usr_src.iterdir())
    except OSError:
        return found
    for arch_dir in entries:
        if not arch_dir.name.startswith("linux-headers-") or "-common" in arch_dir.name:
            continue
        if not (arch_dir / ".config").is_file() or not (arch_dir / "include" / "generated").is_dir():
            continue  # not a configured tree (e.g. a -common dir or a meta leftover)
        arch = _arch_of(arch_dir)
        if want_arch and arch and arch != want_arch:
            continue
        release = _kernel_release_of(arch_dir)
        common = _common_dir(arch_dir, usr_src)
        if common is not None:
            found.append(HeadersSource("split", release, (common, arch_dir), exact=False))
        elif (arch_dir / "include" / "linux" / "kconfig.h").is_file():
            found.append(HeadersSource("tree", release, (arch_dir,), exact=False))
    return found


def _distance(source: HeadersSource, running: str) -> tuple[int, int, tuple[int, ...]]:
    version = _version_key(source.release)
    have = _version_key(running)
    gap = abs((version[0] * 1000 + version[1]) - (have[0] * 1000 + have[1])) if version[:2] and have[:2] else 10**6
    return (0 if source.release == running else 1, gap, tuple(-v for v in version))


def find_headers(
    release: str | None = None,
    *,
    usr_src: Path = USR_SRC,
    lib_modules: Path = LIB_MODULES,
    machine: str | None = None,
    environ: dict[str, str] | None = None,
    distro_id: str = "",
) -> HeadersSource:
    """The headers BCC should use for `release` (default: the running kernel). Writes nothing."""
    release = release or platform.release()
    env = os.environ if environ is None else environ
    override = env.get("BCC_KERNEL_SOURCE")
    # A tree we merged ourselves shows up here while the runtime compiles on another thread: not a user override.
    if override and (Path(override) / "include").is_dir() and not (Path(override) / STAMP_NAME).exists():
        return HeadersSource("env", release, (Path(override),), exact=False)
    build = lib_modules / release / "build"
    if (build / "include").is_dir():
        return HeadersSource("build", release, (build,), exact=True)
    sources = installed_sources(usr_src, machine)
    if not sources:
        raise NoKernelHeadersError(
            f"no kernel headers found: {build} is missing and {usr_src} holds no linux-headers-* tree",
            missing_headers_hint(release, distro_id, machine),
        )
    best = min(sources, key=lambda s: _distance(s, release))
    return HeadersSource(best.kind, best.release, best.dirs, exact=best.release == release)


def missing_headers_hint(release: str, distro_id: str = "", machine: str | None = None) -> str:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine or platform.machine(), "<arch>")
    debian = (
        f"Debian/Ubuntu: apt-get install linux-headers-{release} if it exists, else the nearest headers "
        f"(apt-get install linux-headers-{arch}; its -common package comes with it)"
    )
    rhel = f"RHEL/Fedora: dnf install kernel-devel-{release}"
    if distro_id in ("debian", "ubuntu"):
        return debian
    if distro_id in ("rhel", "centos", "rocky", "almalinux", "fedora", "ol", "amzn"):
        return rhel
    return f"{debian}; {rhel}"


# --- preparing a merged tree --------------------------------------------------------------------------------
def _stamp_for(source: HeadersSource) -> str:
    parts = [f"format={TREE_FORMAT}"]
    for directory in source.dirs:
        stat = directory.stat()
        package_list = DPKG_INFO / f"{directory.name}.list"
        try:
            package = str(package_list.stat().st_mtime_ns)
        except OSError:
            package = "-"
        parts.append(f"{directory}:{stat.st_ino}:{stat.st_mtime_ns}:{package}")
    return "\n".join(parts) + "\n"


def _merge(sources: tuple[Path, ...], target: Path) -> None:
    """Overlay `sources` into `target` with symlinks; later sources win on file conflicts.

    A directory present in only one source becomes one symlink to it; directories present in
    several are recursed into. That keeps the tree to a few hundred links (a file-by-file copy
    of Debian's headers is ~16 000) while every path resolves as in `cp -rs`.
    """
    target.mkdir(parents=True, exist_ok=True)
    entries: dict[str, list[Path]] = {}
    for source in sources:
        try:
            children = sorted(source.iterdir())
        except OSError:
            continue
        for child in children:
            entries.setdefault(child.name, []).append(child)
    for name, paths in entries.items():
        real_dirs = [p for p in paths if p.is_dir() and not p.is_symlink()]
        if len(real_dirs) > 1:
            _merge(tuple(real_dirs), target / name)
        else:
            # A symlink (e.g. scripts -> ../../lib/linux-kbuild-6.1/scripts) is linked to as is: the link
            # in the source tree resolves relative to the source tree, where its target exists.
            (target / name).symlink_to(real_dirs[0] if real_dirs else paths[-1])


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tree_is_whole(target: Path) -> bool:
    return (target / "include" / "linux" / "kconfig.h").is_file() and (target / "include" / "generated").is_dir()


def prepare_headers(source: HeadersSource, state_dir: Path, running: str | None = None) -> HeadersTree:
    """Make `source` usable by BCC; for split installs, build (or reuse) the merged tree under `state_dir`."""
    running = running or platform.release()
    description = source.describe(running)
    if source.kind == "build":
        return HeadersTree(None, description, True, None)
    if source.kind == "env":
        return HeadersTree(source.dirs[0], description, False, str(source.dirs[0]))
    root = state_dir / HEADERS_SUBDIR
    target = root / source.dirs[-1].name.removeprefix("linux-headers-")
    stamp_text = _stamp_for(source)
    with _locked(root):
        stamp = target / STAMP_NAME
        reused = stamp.is_file() and stamp.read_text() == stamp_text and _tree_is_whole(target)
        if not reused:
            staging = root / f".build-{target.name}-{os.getpid()}"
            _remove_tree(staging)
            _merge(source.dirs, staging)
            if not _tree_is_whole(staging):
                _remove_tree(staging)
                raise NoKernelHeadersError(
                    f"headers in {' + '.join(map(str, source.dirs))} lack include/linux/kconfig.h or include/generated",
                    "reinstall the linux-headers packages (both the arch package and its -common package)",
                )
            (staging / STAMP_NAME).write_text(stamp_text)
            _remove_tree(target)
            staging.rename(target)
        _remove_stale_trees(root, keep=target)
    verb = "reused" if reused else "prepared"
    return HeadersTree(target, f"{description} ({verb} as a merged tree at {target})", source.exact, str(target))


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)  # symlinks inside are unlinked, never followed


def _remove_stale_trees(root: Path, keep: Path) -> None:
    """Drop merged trees of headers that were replaced (only directories this module stamped)."""
    for child in root.iterdir():
        if child != keep and child.is_dir() and not child.is_symlink() and (child / STAMP_NAME).is_file():
            _remove_tree(child)


def resolve_headers(
    state_dir: Path,
    release: str | None = None,
    *,
    usr_src: Path = USR_SRC,
    lib_modules: Path = LIB_MODULES,
    machine: str | None = None,
) -> HeadersTree:
    """Find and prepare the headers BCC should use for `release` (default: the running kernel)."""
    running = release or platform.release()
    source = find_headers(running, usr_src=usr_src, lib_modules=lib_modules, machine=machine)
    return prepare_headers(source, state_dir, running)
