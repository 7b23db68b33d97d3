"""Hand memory the agent no longer uses back to the kernel: glibc's free heap, and the pages of
libraries it needed only once (BCC's LLVM and clang, used to compile BPF programs).

After BCC compiles a program, ~80 MiB of libLLVM/libclang-cpp code stays mapped and counted in the
agent's RSS, and clang's freed heap stays with glibc. Neither is used again until the next compile.
`release_after_compile` trims the heap and drops the resident pages of those libraries' read-only
mappings (`madvise(MADV_DONTNEED)`): the agent's RSS falls by that much, the pages become ordinary
page cache the kernel may reclaim, and a later compile faults back in what it touches.

Only read-only mappings with no private (copy-on-write) page are dropped: for those the file is
the only content, so the next access reads exactly what was there. Mappings holding relocated data
(RELRO, writable data) are never touched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_MADV_DONTNEED = 4
# The libraries BCC loads only to compile: LLVM and clang.
COMPILER_LIBRARIES = re.compile(r"/lib(LLVM|clang-cpp)[-.][^/]*$")
_MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
# One release at a time: two compiling threads would otherwise read smaps and advise together.
_lock = threading.Lock()


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    permissions: str
    path: str
    rss: int
    anonymous: int

    @property
    def droppable(self) -> bool:
        """Read-only, file-backed, resident, and without a private copy of any page."""
        return "w" not in self.permissions and self.anonymous == 0 and self.rss > 0


def mappings(smaps: Path = Path("/proc/self/smaps")) -> list[Mapping]:
    """The process's mappings with their resident and anonymous sizes, from smaps."""
    found: list[Mapping] = []
    header: tuple[int, int, str, str] | None = None
    rss = anonymous = 0

    def close() -> None:
        if header is not None:
            found.append(Mapping(*header, rss=rss, anonymous=anonymous))

    with smaps.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            match = _MAPPING.match(line)
            if match:
                close()
                header = (int(match[1], 16), int(match[2], 16), match[3], match[4])
                rss = anonymous = 0
            elif line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Anonymous:"):
                anonymous = int(line.split()[1]) * 1024
    close()
    return found


def trim_heap() -> None:
    """Return free heap pages to the kernel (glibc `malloc_trim`)."""
    if hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


def drop_library_pages(libraries: re.Pattern[str]) -> int:
    """Drop the resident pages of the droppable mappings of `libraries`; returns the bytes dropped."""
    dropped = 0
    for mapping in mappings():
        if not libraries.search(mapping.path) or not mapping.droppable:
            continue
        if _libc.madvise(mapping.start, mapping.end - mapping.start, _MADV_DONTNEED) == 0:
            dropped += mapping.rss
        else:
            log.debug("madvise failed", extra={"fields": {"path": mapping.path, "errno": ctypes.get_errno()}})
    return dropped


# Every shared object and the interpreter: file-backed mappings of a path.
ALL_LIBRARIES = re.compile(r"^/")


def release_after_start() -> int:
    """Once every part runs: trim the heap and drop the pages of every library that start alone touched.

    Loading DuckDB, Arrow, gRPC and BCC touches far more of their code than serving uses (relocations,
    initialisers, parts never called again: ~70 MiB here). What serving uses faults back in from the
    page cache at once; the rest stays out of the agent's RSS. Returns the bytes dropped.
    """
    with _lock:
        trim_heap()
        return drop_library_pages(ALL_LIBRARIES)


def release_before_compile() -> int:
    """Before a BPF compile: drop the library pages that are not in use, so that the compile's own
    peak (LLVM's code and clang's heap, ~150 MiB) does not come on top of them. Returns the bytes dropped."""
    with _lock:
        return drop_library_pages(ALL_LIBRARIES)


def release_after_compile() -> int:
    """After a BPF compile: trim the heap and drop LLVM's and clang's pages; returns the bytes dropped."""
    with _lock:
        trim_heap()
        return drop_library_pages(COMPILER_LIBRARIES)
