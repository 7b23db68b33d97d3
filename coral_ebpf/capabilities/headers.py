"""Find a kernel headers tree BCC can compile against, and prepare it without touching /lib/modules.

BCC looks for `/lib/modules/$(uname -r)/build`. When that is missing (a custom kernel, a
cloud image), a nearby Debian `linux-headers-<abi>` plus `linux-headers-<abi>-common` pair
works for tracepoint programs, because BCC reads tracepoint layouts from tracefs. Neither
directory works alone, so we build a merged tree of symlinks under the agent's state dir
and hand it to BCC as `BCC_KERNEL_SOURCE`.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from coral_ebpf.errors import CoralError

USR_SRC = Path("/usr/src")
_ABI_RE = re.compile(r"^linux-headers-(?P<version>\d+\.\d+(?:\.\d+)?)(?P<rest>[-+][^/]*)$")


@dataclass(frozen=True)
class HeadersTree:
    path: Path | None  # None: BCC finds /lib/modules/<release>/build itself
    description: str
    exact: bool  # built for the running kernel release
    kernel_source_env: str | None  # value for BCC_KERNEL_SOURCE, if one is needed


class NoKernelHeadersError(CoralError):
    pass


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def _split_pairs(usr_src: Path) -> list[tuple[str, Path, Path]]:
    """(abi, arch dir, common dir) for every Debian-style split headers install."""
    pairs = []
    for arch_dir in sorted(usr_src.glob("linux-headers-*")):
        name = arch_dir.name
        if name.endswith("-common") or not (arch_dir / ".config").exists():
            continue
        abi = name.removeprefix("linux-headers-")
        flavour_cut = abi.rsplit("-", 1)[0]  # 6.1.0-56-amd64 -> 6.1.0-56
        common = usr_src / f"linux-headers-{flavour_cut}-common"
        if common.is_dir():
            pairs.append((abi, arch_dir, common))
        elif (arch_dir / "include" / "linux").is_dir():
            pairs.append((abi, arch_dir, arch_dir))  # a complete, unsplit tree
    return pairs


def _link_tree(sources: list[Path], target: Path) -> None:
    """Like `cp -rs src/. target/` for each source in order; later sources win."""
    for source in sources:
        for dirpath, dirnames, filenames in os.walk(source):
            rel = Path(dirpath).relative_to(source)
            out_dir = target / rel
            out_dir.mkdir(parents=True, exist_ok=True)
            leaves = list(filenames)
            for d in list(dirnames):
                if (Path(dirpath) / d).is_symlink():  # e.g. scripts -> ../../lib/linux-kbuild-*/scripts
                    dirnames.remove(d)
                    leaves.append(d)
            for leaf in leaves:
                link = out_dir / leaf
                if link.is_symlink() or link.exists():
                    if link.is_dir() and not link.is_symlink():
                        continue
                    link.unlink()
                link.symlink_to(Path(dirpath) / leaf)


def resolve_headers(state_dir: Path, release: str | None = None, usr_src: Path = USR_SRC) -> HeadersTree:
    """Return the headers BCC should use for `release` (default: the running kernel)."""
    release = release or platform.release()
    build = Path("/lib/modules") / release / "build"
    if (build / "include").is_dir():
        return HeadersTree(None, f"{build} (matches the running kernel)", True, None)
    pairs = _split_pairs(usr_src)
    if not pairs:
        raise NoKernelHeadersError(
            f"no kernel headers found: {build} is missing and {usr_src} holds no linux-headers-* tree",
            f"install linux-headers-{release} if your distribution has it, "
            "else the nearest headers package (Debian: apt-get install linux-headers-amd64)",
        )
    running = _version_key(release)

    def distance(item: tuple[str, Path, Path]) -> tuple[int, int, tuple[int, ...]]:
        version = _version_key(item[0])
        exact = 0 if item[0] == release else 1
        major_minor_gap = abs((version[0] * 1000 + version[1]) - (running[0] * 1000 + running[1]))
        return (exact, major_minor_gap, tuple(-v for v in version))

    abi, arch_dir, common_dir = min(pairs, key=distance)
    target = state_dir / "kernel-headers" / abi
    stamp = target / ".coral-ebpf-stamp"
    wanted = f"{arch_dir}:{arch_dir.stat().st_mtime_ns}:{common_dir}:{common_dir.stat().st_mtime_ns}"
    if not stamp.exists() or stamp.read_text() != wanted:
        sources = [common_dir] if common_dir == arch_dir else [common_dir, arch_dir]
        _link_tree(sources, target)
        stamp.write_text(wanted)
    exact = abi == release
    description = f"{arch_dir} + {common_dir.name} merged at {target}" + (
        "" if exact else f" (built for {abi}; running {release}: fine for tracepoints)"
    )
    return HeadersTree(target, description, exact, str(target))
